-- The tables uacreg uses, for MySQL / MariaDB (mysql kamailio < schema/mysql.sql). uacregd
-- creates them itself on first start (migrations/mysql runs the same statements; a test checks
-- that this file and the migrations agree).
--
-- uacreg: Kamailio's `uac` module table (table version 5) plus the optional `contact_user`
-- column of version 6. A table Kamailio created is used as it is.
CREATE TABLE IF NOT EXISTS `uacreg` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `l_uuid` VARCHAR(64) DEFAULT '' NOT NULL,
    `l_username` VARCHAR(64) DEFAULT '' NOT NULL,
    `l_domain` VARCHAR(64) DEFAULT '' NOT NULL,
    `r_username` VARCHAR(64) DEFAULT '' NOT NULL,
    `r_domain` VARCHAR(64) DEFAULT '' NOT NULL,
    `realm` VARCHAR(64) DEFAULT '' NOT NULL,
    `auth_username` VARCHAR(64) DEFAULT '' NOT NULL,
    `auth_password` VARCHAR(64) DEFAULT '' NOT NULL,
    `auth_ha1` VARCHAR(128) DEFAULT '' NOT NULL,
    `auth_proxy` VARCHAR(255) DEFAULT '' NOT NULL,
    `expires` INT DEFAULT 0 NOT NULL,
    `flags` INT DEFAULT 0 NOT NULL,
    `reg_delay` INT DEFAULT 0 NOT NULL,
    `contact_addr` VARCHAR(255) DEFAULT '' NOT NULL,
    `socket` VARCHAR(128) DEFAULT '' NOT NULL,
    `contact_user` VARCHAR(64) DEFAULT '' NOT NULL,
    CONSTRAINT l_uuid_idx UNIQUE (`l_uuid`)
) ENGINE=InnoDB;

-- uacreg_status: written by uacregd when [database] status_table = true, never read back.
CREATE TABLE IF NOT EXISTS `uacreg_status` (
    `l_uuid` VARCHAR(64) PRIMARY KEY NOT NULL,
    `state` VARCHAR(32) DEFAULT '' NOT NULL,
    `last_code` INTEGER DEFAULT 0 NOT NULL,
    `last_reason` VARCHAR(255) DEFAULT '' NOT NULL,
    `last_success` BIGINT DEFAULT 0 NOT NULL,
    `next_refresh` BIGINT DEFAULT 0 NOT NULL,
    `binding_expires` BIGINT DEFAULT 0 NOT NULL,
    `failures` INTEGER DEFAULT 0 NOT NULL,
    `updated_at` BIGINT DEFAULT 0 NOT NULL
) ENGINE=InnoDB;
