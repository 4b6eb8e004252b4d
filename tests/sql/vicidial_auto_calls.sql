-- The columns of VICIdial's vicidial_auto_calls (VICIdial 2.14 schema, MyISAM as in VICIdial) that
-- vicirec's CONSENT poll reads: a call waiting in an in-group has a row, deleted when the call ends.
-- Test fixture only.
CREATE TABLE vicidial_auto_calls (
  auto_call_id INT(9) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
  server_ip VARCHAR(15) NOT NULL,
  campaign_id VARCHAR(20),
  status ENUM('SENT','RINGING','LIVE','XFER','PAUSED','CLOSER','BUSY','DISCONNECT','IVR') DEFAULT 'PAUSED',
  lead_id INT(9) UNSIGNED NOT NULL,
  uniqueid VARCHAR(20),
  callerid VARCHAR(20),
  channel VARCHAR(100),
  phone_number VARCHAR(18),
  call_time DATETIME,
  call_type ENUM('IN','OUT','OUTBALANCE') DEFAULT 'OUT',
  last_update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  INDEX (uniqueid),
  INDEX (callerid)
) ENGINE=MyISAM;
