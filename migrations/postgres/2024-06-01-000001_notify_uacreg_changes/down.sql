DROP TRIGGER IF EXISTS uacreg_notify_change ON uacreg;
DROP FUNCTION IF EXISTS uacreg_notify_change();
