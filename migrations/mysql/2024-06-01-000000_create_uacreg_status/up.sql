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
