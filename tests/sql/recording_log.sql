-- VICIdial's recording_log (VICIdial 2.14 schema, MyISAM as in VICIdial): one row per recording the
-- agent screen starts (MonitorConf) and closes (StopMonitorConf: end_time, end_epoch, length).
-- vicirec reads it to confirm and verify a START/STOP. Test fixture only.
CREATE TABLE recording_log (
  recording_id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
  channel VARCHAR(100),
  server_ip VARCHAR(15),
  extension VARCHAR(100),
  start_time DATETIME,
  start_epoch INT(10) UNSIGNED,
  end_time DATETIME,
  end_epoch INT(10) UNSIGNED,
  length_in_sec MEDIUMINT(8) UNSIGNED,
  length_in_min DOUBLE(8,2),
  filename VARCHAR(100),
  location VARCHAR(255),
  lead_id INT(9) UNSIGNED,
  user VARCHAR(20),
  vicidial_id VARCHAR(20),
  INDEX (filename),
  INDEX (lead_id),
  INDEX (user),
  INDEX (vicidial_id)
) ENGINE=MyISAM;
