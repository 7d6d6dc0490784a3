BEGIN TRANSACTION;
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO "alembic_version" VALUES('v3.2.0.a');
CREATE TABLE studies (
	study_id INTEGER NOT NULL, 
	study_name VARCHAR(512) NOT NULL, 
	PRIMARY KEY (study_id)
);
INSERT INTO "studies" VALUES(1,'ctiny');
CREATE TABLE study_directions (
	study_direction_id INTEGER NOT NULL, 
	direction VARCHAR(8) NOT NULL, 
	study_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	PRIMARY KEY (study_direction_id), 
	UNIQUE (study_id, objective), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "study_directions" VALUES(1,'MAXIMIZE',1,0);
CREATE TABLE study_system_attributes (
	study_system_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_system_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE study_user_attributes (
	study_user_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_user_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "study_user_attributes" VALUES(1,1,'relkd.compare','{"methods": ["none", "kd", "sp"], "seeds": [0, 1], "setting": {"name": "ctiny", "seed": 0, "data": {"dataset": "synthetic", "data_dir": null, "val_fraction": 0.1, "split_seed": 0, "train_subset": null, "batch_size": 32, "eval_batch_size": 1024, "augment": false, "params": {"train_size": 240, "test_size": 60}}, "teacher": {"model": "cnn_tiny", "params": {"width": 8}, "epochs": 2, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "schedule": "cosine", "milestones": [0.625, 0.75, 0.875], "gamma": 0.1, "batch_size": null, "augment": true}, "student": {"model": "cnn_tiny", "params": {"width": 4}}, "budget": {"epochs": 2, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "schedule": "cosine", "milestones": [0.625, 0.75, 0.875], "gamma": 0.1, "batch_size": null, "augment": null}}}');
CREATE TABLE trial_heartbeats (
	trial_heartbeat_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	heartbeat DATETIME NOT NULL, 
	PRIMARY KEY (trial_heartbeat_id), 
	UNIQUE (trial_id), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_heartbeats" VALUES(1,1,'2026-12-02 22:02:17');
INSERT INTO "trial_heartbeats" VALUES(2,2,'2026-12-02 22:02:30');
INSERT INTO "trial_heartbeats" VALUES(3,3,'2026-12-02 22:02:41');
INSERT INTO "trial_heartbeats" VALUES(4,4,'2026-12-02 22:03:04');
CREATE TABLE trial_intermediate_values (
	trial_intermediate_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	step INTEGER NOT NULL, 
	intermediate_value FLOAT, 
	intermediate_value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_intermediate_value_id), 
	UNIQUE (trial_id, step), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_params (
	param_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	param_name VARCHAR(512), 
	param_value FLOAT, 
	distribution_json TEXT, 
	PRIMARY KEY (param_id), 
	UNIQUE (trial_id, param_name), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_params" VALUES(1,1,'method',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["none", "kd", "sp"]}}');
INSERT INTO "trial_params" VALUES(2,1,'seed',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [0, 1]}}');
INSERT INTO "trial_params" VALUES(3,2,'method',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["none", "kd", "sp"]}}');
INSERT INTO "trial_params" VALUES(4,2,'seed',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [0, 1]}}');
INSERT INTO "trial_params" VALUES(5,3,'method',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["none", "kd", "sp"]}}');
INSERT INTO "trial_params" VALUES(6,3,'seed',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [0, 1]}}');
INSERT INTO "trial_params" VALUES(7,4,'method',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["none", "kd", "sp"]}}');
INSERT INTO "trial_params" VALUES(8,4,'seed',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [0, 1]}}');
CREATE TABLE trial_system_attributes (
	trial_system_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_system_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_system_attributes" VALUES(1,1,'fixed_params','{"method": "none", "seed": 0}');
INSERT INTO "trial_system_attributes" VALUES(2,2,'fixed_params','{"method": "none", "seed": 1}');
INSERT INTO "trial_system_attributes" VALUES(3,3,'fixed_params','{"method": "kd", "seed": 0}');
INSERT INTO "trial_system_attributes" VALUES(4,4,'fixed_params','{"method": "kd", "seed": 1}');
INSERT INTO "trial_system_attributes" VALUES(5,5,'fixed_params','{"method": "sp", "seed": 0}');
INSERT INTO "trial_system_attributes" VALUES(6,6,'fixed_params','{"method": "sp", "seed": 1}');
CREATE TABLE trial_user_attributes (
	trial_user_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_user_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_user_attributes" VALUES(1,1,'test_accuracy','0.21666666666666667');
INSERT INTO "trial_user_attributes" VALUES(2,1,'wall_seconds','13.288155604999702');
INSERT INTO "trial_user_attributes" VALUES(3,1,'part_means','{"ce": 2.27491029103597}');
INSERT INTO "trial_user_attributes" VALUES(4,1,'objective_config','{"relkd_config": 1, "ce_weight": 1.0, "kd": null, "terms": []}');
INSERT INTO "trial_user_attributes" VALUES(5,2,'test_accuracy','0.15');
INSERT INTO "trial_user_attributes" VALUES(6,2,'wall_seconds','10.440225403999648');
INSERT INTO "trial_user_attributes" VALUES(7,2,'part_means','{"ce": 2.2857216199239097}');
INSERT INTO "trial_user_attributes" VALUES(8,2,'objective_config','{"relkd_config": 1, "ce_weight": 1.0, "kd": null, "terms": []}');
INSERT INTO "trial_user_attributes" VALUES(9,3,'test_accuracy','0.1');
INSERT INTO "trial_user_attributes" VALUES(10,3,'wall_seconds','10.965769984000872');
INSERT INTO "trial_user_attributes" VALUES(11,3,'part_means','{"ce": 2.318482240041097, "kd": 0.035878315567970276}');
INSERT INTO "trial_user_attributes" VALUES(12,3,'objective_config','{"relkd_config": 1, "ce_weight": 0.1, "kd": {"weight": 0.9, "temperature": 4.0}, "terms": []}');
CREATE TABLE trial_values (
	trial_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	value FLOAT, 
	value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_value_id), 
	UNIQUE (trial_id, objective), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_values" VALUES(1,1,0,2.08333333333333342585e-01,'FINITE');
INSERT INTO "trial_values" VALUES(2,2,0,1.66666666666666657414e-01,'FINITE');
INSERT INTO "trial_values" VALUES(3,3,0,0.125,'FINITE');
CREATE TABLE trials (
	trial_id INTEGER NOT NULL, 
	number INTEGER, 
	study_id INTEGER, 
	state VARCHAR(8) NOT NULL, 
	datetime_start DATETIME, 
	datetime_complete DATETIME, 
	PRIMARY KEY (trial_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "trials" VALUES(1,0,1,'COMPLETE','2026-12-02 22:02:17.285334','2026-12-02 22:02:30.839737');
INSERT INTO "trials" VALUES(2,1,1,'COMPLETE','2026-12-02 22:02:30.913652','2026-12-02 22:02:41.558303');
INSERT INTO "trials" VALUES(3,2,1,'COMPLETE','2026-12-02 22:02:41.662043','2026-12-02 22:03:04.539333');
INSERT INTO "trials" VALUES(4,3,1,'FAIL','2026-12-02 22:03:04.582949','2026-12-02 22:03:04.677461');
INSERT INTO "trials" VALUES(5,4,1,'WAITING',NULL,NULL);
INSERT INTO "trials" VALUES(6,5,1,'WAITING',NULL,NULL);
CREATE TABLE version_info (
	version_info_id INTEGER NOT NULL, 
	schema_version INTEGER, 
	library_version VARCHAR(256), 
	PRIMARY KEY (version_info_id), 
	CHECK (version_info_id=1)
);
INSERT INTO "version_info" VALUES(1,12,'5.1.0');
CREATE UNIQUE INDEX ix_studies_study_name ON studies (study_name);
CREATE INDEX ix_trials_study_id ON trials (study_id);
COMMIT;
