DROP TABLE IF EXISTS uacreg_status;
