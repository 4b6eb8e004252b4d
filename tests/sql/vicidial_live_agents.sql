-- The columns of VICIdial's vicidial_live_agents (VICIdial 2.14 schema, MyISAM as in VICIdial) that
-- vicirec reads, plus the ones the agent screen writes around them. Test fixture only.
CREATE TABLE vicidial_live_agents (
  live_agent_id INT(9) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
  user VARCHAR(20),
  server_ip VARCHAR(15) NOT NULL,
  conf_exten VARCHAR(20),
  extension VARCHAR(100),
  status ENUM('READY','QUEUE','INCALL','PAUSED','CLOSER','MQUEUE') DEFAULT 'PAUSED',
  lead_id INT(9) UNSIGNED NOT NULL DEFAULT 0,
  campaign_id VARCHAR(8),
  uniqueid VARCHAR(20),
  callerid VARCHAR(20),
  channel VARCHAR(100),
  last_update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  external_recording VARCHAR(20) DEFAULT '',
  INDEX (last_update_time)
) ENGINE=MyISAM;
