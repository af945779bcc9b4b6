CREATE OR REPLACE FUNCTION uacreg_notify_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('uacreg_changed', TG_OP);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS uacreg_notify_change ON uacreg;
CREATE TRIGGER uacreg_notify_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON uacreg
    FOR EACH STATEMENT EXECUTE FUNCTION uacreg_notify_change();
