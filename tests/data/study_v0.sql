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
INSERT INTO "studies" VALUES(1,'house_v0');
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
INSERT INTO "study_user_attributes" VALUES(1,1,'relkd.version','"0.1.0"');
INSERT INTO "study_user_attributes" VALUES(2,1,'relkd.study','{"name": "house_v0", "seed": 0, "device": "cpu", "data": {"dataset": "synthetic", "data_dir": null, "val_fraction": 0.1, "split_seed": 0, "train_subset": null, "batch_size": 32, "eval_batch_size": 1024, "augment": false, "params": {"train_size": 240, "test_size": 60}}, "teacher": {"model": "cnn_tiny", "params": {"width": 8}, "epochs": 2, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "schedule": "cosine", "milestones": [0.625, 0.75, 0.875], "gamma": 0.1, "batch_size": null, "augment": true}, "student": {"model": "cnn_tiny", "params": {"width": 4}}, "budget": {"epochs": 2, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "schedule": "cosine", "milestones": [0.625, 0.75, 0.875], "gamma": 0.1, "batch_size": null, "augment": null}, "search": {"terms": {"low": 0, "high": 2}, "tap": ["last_stage", "pool"], "view": ["flatten", "avgpool", "maxpool"], "affinity": ["angle", "cosine", "cosine01", "dot", "euclidean", "pearson", "rbf", "rbf_taylor", "sq_euclidean"], "normalisation": ["center", "frobenius", "max", "mean", "minmax", "none", "row_l2", "row_softmax", "row_sum", "zscore"], "loss": ["cosine", "js", "kl", "l1", "mse", "smooth_l1"], "component_params": "search", "weight": {"low": 0.001, "high": 100000.0, "log": true}, "kd": {"enabled": [false, true], "temperature": {"low": 1.0, "high": 8.0}, "weight": {"low": 0.1, "high": 1.0}}, "ce_weight": {"low": 0.1, "high": 1.0, "log": true}}, "optuna": {"study_name": "house_v0", "storage": null, "sampler": {"name": "tpe", "n_startup_trials": 2}, "pruner": {"name": "median"}, "seed": 0, "n_trials": 6, "timeout": null, "anchors": ["none", "kd", "sp+kd"], "heartbeat_interval": 60}}');
INSERT INTO "study_user_attributes" VALUES(3,1,'relkd.setting','{"seed": 0, "device": "cpu", "data": {"dataset": "synthetic", "data_dir": null, "val_fraction": 0.1, "split_seed": 0, "train_subset": null, "batch_size": 32, "eval_batch_size": 1024, "augment": false, "params": {"train_size": 240, "test_size": 60}}, "teacher": {"model": "cnn_tiny", "params": {"width": 8}, "epochs": 2, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "schedule": "cosine", "milestones": [0.625, 0.75, 0.875], "gamma": 0.1, "batch_size": null, "augment": true}, "student": {"model": "cnn_tiny", "params": {"width": 4}}, "budget": {"epochs": 2, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "schedule": "cosine", "milestones": [0.625, 0.75, 0.875], "gamma": 0.1, "batch_size": null, "augment": null}}');
INSERT INTO "study_user_attributes" VALUES(4,1,'relkd.n_trials','6');
CREATE TABLE trial_heartbeats (
	trial_heartbeat_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	heartbeat DATETIME NOT NULL, 
	PRIMARY KEY (trial_heartbeat_id), 
	UNIQUE (trial_id), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_heartbeats" VALUES(1,1,'2026-12-02 21:23:34');
INSERT INTO "trial_heartbeats" VALUES(2,2,'2026-12-02 21:23:34');
INSERT INTO "trial_heartbeats" VALUES(3,3,'2026-12-02 21:23:34');
INSERT INTO "trial_heartbeats" VALUES(4,4,'2026-12-02 21:23:35');
INSERT INTO "trial_heartbeats" VALUES(5,5,'2026-12-02 21:23:35');
INSERT INTO "trial_heartbeats" VALUES(6,6,'2026-12-02 21:23:35');
INSERT INTO "trial_heartbeats" VALUES(7,7,'2026-12-02 21:23:35');
INSERT INTO "trial_heartbeats" VALUES(8,8,'2026-12-02 21:23:35');
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
INSERT INTO "trial_intermediate_values" VALUES(1,1,1,2.08333333333333342585e-01,'FINITE');
INSERT INTO "trial_intermediate_values" VALUES(2,1,2,2.08333333333333342585e-01,'FINITE');
INSERT INTO "trial_intermediate_values" VALUES(3,2,1,0.125,'FINITE');
INSERT INTO "trial_intermediate_values" VALUES(4,2,2,0.125,'FINITE');
INSERT INTO "trial_intermediate_values" VALUES(5,3,1,0.125,'FINITE');
INSERT INTO "trial_intermediate_values" VALUES(6,3,2,0.125,'FINITE');
INSERT INTO "trial_intermediate_values" VALUES(7,4,1,2.08333333333333342585e-01,'FINITE');
INSERT INTO "trial_intermediate_values" VALUES(8,4,2,2.08333333333333342585e-01,'FINITE');
INSERT INTO "trial_intermediate_values" VALUES(9,6,1,2.08333333333333342585e-01,'FINITE');
INSERT INTO "trial_intermediate_values" VALUES(10,6,2,2.08333333333333342585e-01,'FINITE');
INSERT INTO "trial_intermediate_values" VALUES(11,8,1,0.125,'FINITE');
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
INSERT INTO "trial_params" VALUES(1,1,'n_terms',0.0,'{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 0, "high": 2}}');
INSERT INTO "trial_params" VALUES(2,1,'kd',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [false, true]}}');
INSERT INTO "trial_params" VALUES(3,1,'ce_weight',1.0,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.1, "high": 1.0, "log": true}}');
INSERT INTO "trial_params" VALUES(4,2,'n_terms',0.0,'{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 0, "high": 2}}');
INSERT INTO "trial_params" VALUES(5,2,'kd',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [false, true]}}');
INSERT INTO "trial_params" VALUES(6,2,'kd.temperature',4.0,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 1.0, "high": 8.0, "log": false}}');
INSERT INTO "trial_params" VALUES(7,2,'kd.weight',0.9,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.1, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(8,2,'ce_weight',0.1,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.1, "high": 1.0, "log": true}}');
INSERT INTO "trial_params" VALUES(9,3,'n_terms',1.0,'{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 0, "high": 2}}');
INSERT INTO "trial_params" VALUES(10,3,'term0.tap',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["last_stage", "pool"]}}');
INSERT INTO "trial_params" VALUES(11,3,'term0.view',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["flatten", "avgpool", "maxpool"]}}');
INSERT INTO "trial_params" VALUES(12,3,'term0.affinity',3.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["angle", "cosine", "cosine01", "dot", "euclidean", "pearson", "rbf", "rbf_taylor", "sq_euclidean"]}}');
INSERT INTO "trial_params" VALUES(13,3,'term0.normalisation',6.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["center", "frobenius", "max", "mean", "minmax", "none", "row_l2", "row_softmax", "row_sum", "zscore"]}}');
INSERT INTO "trial_params" VALUES(14,3,'term0.loss',4.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["cosine", "js", "kl", "l1", "mse", "smooth_l1"]}}');
INSERT INTO "trial_params" VALUES(15,3,'term0.weight',3000.0,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.001, "high": 100000.0, "log": true}}');
INSERT INTO "trial_params" VALUES(16,3,'kd',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [false, true]}}');
INSERT INTO "trial_params" VALUES(17,3,'kd.temperature',4.0,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 1.0, "high": 8.0, "log": false}}');
INSERT INTO "trial_params" VALUES(18,3,'kd.weight',0.9,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.1, "high": 1.0, "log": false}}');
INSERT INTO "trial_params" VALUES(19,3,'ce_weight',0.1,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.1, "high": 1.0, "log": true}}');
INSERT INTO "trial_params" VALUES(20,4,'n_terms',0.0,'{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 0, "high": 2}}');
INSERT INTO "trial_params" VALUES(21,4,'kd',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [false, true]}}');
INSERT INTO "trial_params" VALUES(22,4,'ce_weight',9.7735470542156288598e-01,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.1, "high": 1.0, "log": true}}');
INSERT INTO "trial_params" VALUES(23,5,'n_terms',2.0,'{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 0, "high": 2}}');
INSERT INTO "trial_params" VALUES(24,5,'term0.tap',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["last_stage", "pool"]}}');
INSERT INTO "trial_params" VALUES(25,5,'term0.view',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["flatten", "avgpool", "maxpool"]}}');
INSERT INTO "trial_params" VALUES(26,5,'term0.affinity',5.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["angle", "cosine", "cosine01", "dot", "euclidean", "pearson", "rbf", "rbf_taylor", "sq_euclidean"]}}');
INSERT INTO "trial_params" VALUES(27,5,'term0.normalisation',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["center", "frobenius", "max", "mean", "minmax", "none", "row_l2", "row_softmax", "row_sum", "zscore"]}}');
INSERT INTO "trial_params" VALUES(28,5,'term0.loss',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["cosine", "js", "kl", "l1", "mse", "smooth_l1"]}}');
INSERT INTO "trial_params" VALUES(29,6,'n_terms',2.0,'{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 0, "high": 2}}');
INSERT INTO "trial_params" VALUES(30,6,'term0.tap',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["last_stage", "pool"]}}');
INSERT INTO "trial_params" VALUES(31,6,'term0.view',2.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["flatten", "avgpool", "maxpool"]}}');
INSERT INTO "trial_params" VALUES(32,6,'term0.affinity',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["angle", "cosine", "cosine01", "dot", "euclidean", "pearson", "rbf", "rbf_taylor", "sq_euclidean"]}}');
INSERT INTO "trial_params" VALUES(33,6,'term0.normalisation',2.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["center", "frobenius", "max", "mean", "minmax", "none", "row_l2", "row_softmax", "row_sum", "zscore"]}}');
INSERT INTO "trial_params" VALUES(34,6,'term0.loss',5.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["cosine", "js", "kl", "l1", "mse", "smooth_l1"]}}');
INSERT INTO "trial_params" VALUES(35,6,'term0.smooth_l1.beta',1.60538602102438698882e-01,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.01, "high": 10.0, "log": true}}');
INSERT INTO "trial_params" VALUES(36,6,'term0.weight',1.3095340919572250396e-03,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.001, "high": 100000.0, "log": true}}');
INSERT INTO "trial_params" VALUES(37,6,'term1.tap',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["last_stage", "pool"]}}');
INSERT INTO "trial_params" VALUES(38,6,'term1.view',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["flatten", "avgpool", "maxpool"]}}');
INSERT INTO "trial_params" VALUES(39,6,'term1.affinity',8.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["angle", "cosine", "cosine01", "dot", "euclidean", "pearson", "rbf", "rbf_taylor", "sq_euclidean"]}}');
INSERT INTO "trial_params" VALUES(40,6,'term1.normalisation',7.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["center", "frobenius", "max", "mean", "minmax", "none", "row_l2", "row_softmax", "row_sum", "zscore"]}}');
INSERT INTO "trial_params" VALUES(41,6,'term1.row_softmax.temperature',1.26907061695422540559e+00,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.05, "high": 10.0, "log": true}}');
INSERT INTO "trial_params" VALUES(42,6,'term1.loss',4.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["cosine", "js", "kl", "l1", "mse", "smooth_l1"]}}');
INSERT INTO "trial_params" VALUES(43,6,'term1.weight',5.5267285999584123135e-02,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.001, "high": 100000.0, "log": true}}');
INSERT INTO "trial_params" VALUES(44,6,'kd',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [false, true]}}');
INSERT INTO "trial_params" VALUES(45,6,'ce_weight',8.27199958827190440224e-01,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.1, "high": 1.0, "log": true}}');
INSERT INTO "trial_params" VALUES(46,7,'n_terms',1.0,'{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 0, "high": 2}}');
INSERT INTO "trial_params" VALUES(47,7,'term0.tap',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["last_stage", "pool"]}}');
INSERT INTO "trial_params" VALUES(48,7,'term0.view',2.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["flatten", "avgpool", "maxpool"]}}');
INSERT INTO "trial_params" VALUES(49,7,'term0.affinity',3.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["angle", "cosine", "cosine01", "dot", "euclidean", "pearson", "rbf", "rbf_taylor", "sq_euclidean"]}}');
INSERT INTO "trial_params" VALUES(50,7,'term0.normalisation',8.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["center", "frobenius", "max", "mean", "minmax", "none", "row_l2", "row_softmax", "row_sum", "zscore"]}}');
INSERT INTO "trial_params" VALUES(51,7,'term0.loss',3.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["cosine", "js", "kl", "l1", "mse", "smooth_l1"]}}');
INSERT INTO "trial_params" VALUES(52,8,'n_terms',1.0,'{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 0, "high": 2}}');
INSERT INTO "trial_params" VALUES(53,8,'term0.tap',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["last_stage", "pool"]}}');
INSERT INTO "trial_params" VALUES(54,8,'term0.view',1.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["flatten", "avgpool", "maxpool"]}}');
INSERT INTO "trial_params" VALUES(55,8,'term0.affinity',2.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["angle", "cosine", "cosine01", "dot", "euclidean", "pearson", "rbf", "rbf_taylor", "sq_euclidean"]}}');
INSERT INTO "trial_params" VALUES(56,8,'term0.normalisation',7.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["center", "frobenius", "max", "mean", "minmax", "none", "row_l2", "row_softmax", "row_sum", "zscore"]}}');
INSERT INTO "trial_params" VALUES(57,8,'term0.row_softmax.temperature',4.69606555413784820807e-01,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.05, "high": 10.0, "log": true}}');
INSERT INTO "trial_params" VALUES(58,8,'term0.loss',2.0,'{"name": "CategoricalDistribution", "attributes": {"choices": ["cosine", "js", "kl", "l1", "mse", "smooth_l1"]}}');
INSERT INTO "trial_params" VALUES(59,8,'term0.weight',4.73174279185462364708e+04,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.001, "high": 100000.0, "log": true}}');
INSERT INTO "trial_params" VALUES(60,8,'kd',0.0,'{"name": "CategoricalDistribution", "attributes": {"choices": [false, true]}}');
INSERT INTO "trial_params" VALUES(61,8,'ce_weight',2.40203791187675985696e-01,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.1, "high": 1.0, "log": true}}');
CREATE TABLE trial_system_attributes (
	trial_system_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_system_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_system_attributes" VALUES(1,1,'fixed_params','{"n_terms": 0, "kd": false, "ce_weight": 1.0}');
INSERT INTO "trial_system_attributes" VALUES(2,2,'fixed_params','{"n_terms": 0, "kd": true, "kd.temperature": 4.0, "kd.weight": 0.9, "ce_weight": 0.1}');
INSERT INTO "trial_system_attributes" VALUES(3,3,'fixed_params','{"n_terms": 1, "term0.tap": "last_stage", "term0.view": "flatten", "term0.affinity": "dot", "term0.normalisation": "row_l2", "term0.loss": "mse", "term0.weight": 3000.0, "kd": true, "kd.temperature": 4.0, "kd.weight": 0.9, "ce_weight": 0.1}');
INSERT INTO "trial_system_attributes" VALUES(4,4,'tpe:relative_params:0','"{\"ce_weight\": 0.9773547054215629, \"kd\": false, \"n_terms\": 0, \"kd.temperature\": 7.669447826020809, \"kd.weight\": 0.1957081288754925, \"term0.affinity\": \"cosine\", \"term0.loss\": \"js\", \"term0.normalisation\": \"row_sum\", \"term0.tap\": \"pool\", \"term0.view\": \"avgpool\", \"term0.weight\": 0.004766486780041105}"');
INSERT INTO "trial_system_attributes" VALUES(5,5,'tpe:relative_params:0','"{\"ce_weight\": 0.12755796335409245, \"kd\": false, \"n_terms\": 2, \"kd.temperature\": 5.782177768930921, \"kd.weight\": 0.16813450106265243, \"term0.affinity\": \"pearson\", \"term0.loss\": \"js\", \"term0.normalisation\": \"frobenius\", \"term0.tap\": \"pool\", \"term0.view\": \"avgpool\", \"term0.weight\": 0.09877867598156048}"');
INSERT INTO "trial_system_attributes" VALUES(6,6,'tpe:relative_params:0','"{\"n_terms\": 2, \"ce_weight\": 0.8271999588271904, \"kd\": false, \"kd.temperature\": 6.564676731322423, \"kd.weight\": 0.10503714528662267, \"term0.affinity\": \"cosine\", \"term0.loss\": \"smooth_l1\", \"term0.normalisation\": \"max\", \"term0.tap\": \"last_stage\", \"term0.view\": \"maxpool\", \"term0.weight\": 0.001309534091957225}"');
INSERT INTO "trial_system_attributes" VALUES(7,7,'tpe:relative_params:0','"{\"n_terms\": 1, \"ce_weight\": 0.22687383165521965, \"kd\": false, \"kd.temperature\": 2.4335366867309176, \"kd.weight\": 0.1516794619673003, \"term0.affinity\": \"dot\", \"term0.loss\": \"l1\", \"term0.normalisation\": \"row_sum\", \"term0.tap\": \"pool\", \"term0.view\": \"maxpool\", \"term0.weight\": 80413.93185473788, \"term0.smooth_l1.beta\": 1.278226295329851, \"term1.affinity\": \"euclidean\", \"term1.loss\": \"smooth_l1\", \"term1.normalisation\": \"none\", \"term1.row_softmax.temperature\": 0.128011266610229, \"term1.tap\": \"pool\", \"term1.view\": \"flatten\", \"term1.weight\": 72034.4959399053}"');
INSERT INTO "trial_system_attributes" VALUES(8,8,'tpe:relative_params:0','"{\"n_terms\": 1, \"ce_weight\": 0.24020379118767599, \"kd\": false, \"kd.temperature\": 1.213531040492771, \"kd.weight\": 0.11033276455702518, \"term0.affinity\": \"cosine01\", \"term0.loss\": \"kl\", \"term0.normalisation\": \"row_softmax\", \"term0.tap\": \"last_stage\", \"term0.view\": \"avgpool\", \"term0.weight\": 47317.42791854624, \"term0.smooth_l1.beta\": 0.23367433400333895, \"term1.affinity\": \"pearson\", \"term1.loss\": \"cosine\", \"term1.normalisation\": \"frobenius\", \"term1.row_softmax.temperature\": 0.07100921451981637, \"term1.tap\": \"pool\", \"term1.view\": \"maxpool\", \"term1.weight\": 8314.219857727641}"');
CREATE TABLE trial_user_attributes (
	trial_user_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_user_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_user_attributes" VALUES(1,1,'anchor','"none"');
INSERT INTO "trial_user_attributes" VALUES(2,1,'anchor_in_space','true');
INSERT INTO "trial_user_attributes" VALUES(3,2,'anchor','"kd"');
INSERT INTO "trial_user_attributes" VALUES(4,2,'anchor_in_space','true');
INSERT INTO "trial_user_attributes" VALUES(5,3,'anchor','"sp+kd"');
INSERT INTO "trial_user_attributes" VALUES(6,3,'anchor_in_space','true');
INSERT INTO "trial_user_attributes" VALUES(7,1,'objective_config','{"relkd_config": 1, "ce_weight": 1.0, "kd": null, "terms": []}');
INSERT INTO "trial_user_attributes" VALUES(8,1,'seed','0');
INSERT INTO "trial_user_attributes" VALUES(9,1,'versions','{"relkd": "0.1.0", "torch": "2.15.0+cu132", "optuna": "5.1.0", "python": "3.11.7"}');
INSERT INTO "trial_user_attributes" VALUES(10,1,'worker','"vm:8657"');
INSERT INTO "trial_user_attributes" VALUES(11,1,'part_means','{"ce": 2.27491029103597}');
INSERT INTO "trial_user_attributes" VALUES(12,1,'wall_seconds','0.09401900000011665');
INSERT INTO "trial_user_attributes" VALUES(13,1,'train_seconds','0.08885470899986103');
INSERT INTO "trial_user_attributes" VALUES(14,1,'val_history','[0.20833333333333334, 0.20833333333333334]');
INSERT INTO "trial_user_attributes" VALUES(15,1,'epochs','2');
INSERT INTO "trial_user_attributes" VALUES(16,1,'samples_per_second','4321.6617816012495');
INSERT INTO "trial_user_attributes" VALUES(17,2,'objective_config','{"relkd_config": 1, "ce_weight": 0.1, "kd": {"weight": 0.9, "temperature": 4.0}, "terms": []}');
INSERT INTO "trial_user_attributes" VALUES(18,2,'seed','0');
INSERT INTO "trial_user_attributes" VALUES(19,2,'versions','{"relkd": "0.1.0", "torch": "2.15.0+cu132", "optuna": "5.1.0", "python": "3.11.7"}');
INSERT INTO "trial_user_attributes" VALUES(20,2,'worker','"vm:8657"');
INSERT INTO "trial_user_attributes" VALUES(21,2,'part_means','{"ce": 2.318482240041097, "kd": 0.035878315567970276}');
INSERT INTO "trial_user_attributes" VALUES(22,2,'wall_seconds','0.1099947719994816');
INSERT INTO "trial_user_attributes" VALUES(23,2,'train_seconds','0.10596175099999527');
INSERT INTO "trial_user_attributes" VALUES(24,2,'val_history','[0.125, 0.125]');
INSERT INTO "trial_user_attributes" VALUES(25,2,'epochs','2');
INSERT INTO "trial_user_attributes" VALUES(26,2,'samples_per_second','3623.949173886501');
INSERT INTO "trial_user_attributes" VALUES(27,3,'objective_config','{"relkd_config": 1, "ce_weight": 0.1, "kd": {"weight": 0.9, "temperature": 4.0}, "terms": [{"name": "sp", "tap": "last_stage", "view": "flatten", "affinity": {"name": "dot"}, "normalisation": {"name": "row_l2"}, "loss": {"name": "mse"}, "weight": 3000.0}]}');
INSERT INTO "trial_user_attributes" VALUES(28,3,'seed','0');
INSERT INTO "trial_user_attributes" VALUES(29,3,'versions','{"relkd": "0.1.0", "torch": "2.15.0+cu132", "optuna": "5.1.0", "python": "3.11.7"}');
INSERT INTO "trial_user_attributes" VALUES(30,3,'worker','"vm:8657"');
INSERT INTO "trial_user_attributes" VALUES(31,3,'part_means','{"ce": 2.3424816131591797, "kd": 0.04196887214978536, "sp": 0.00036093949650724727}');
INSERT INTO "trial_user_attributes" VALUES(32,3,'wall_seconds','0.12805094699979236');
INSERT INTO "trial_user_attributes" VALUES(33,3,'train_seconds','0.12364099699880171');
INSERT INTO "trial_user_attributes" VALUES(34,3,'val_history','[0.125, 0.125]');
INSERT INTO "trial_user_attributes" VALUES(35,3,'epochs','2');
INSERT INTO "trial_user_attributes" VALUES(36,3,'samples_per_second','3105.765962108196');
INSERT INTO "trial_user_attributes" VALUES(37,4,'objective_config','{"relkd_config": 1, "ce_weight": 0.9773547054215629, "kd": null, "terms": []}');
INSERT INTO "trial_user_attributes" VALUES(38,4,'seed','0');
INSERT INTO "trial_user_attributes" VALUES(39,4,'versions','{"relkd": "0.1.0", "torch": "2.15.0+cu132", "optuna": "5.1.0", "python": "3.11.7"}');
INSERT INTO "trial_user_attributes" VALUES(40,4,'worker','"vm:8657"');
INSERT INTO "trial_user_attributes" VALUES(41,4,'part_means','{"ce": 2.276379426320394}');
INSERT INTO "trial_user_attributes" VALUES(42,4,'wall_seconds','0.10163102200021967');
INSERT INTO "trial_user_attributes" VALUES(43,4,'train_seconds','0.09799150499929965');
INSERT INTO "trial_user_attributes" VALUES(44,4,'val_history','[0.20833333333333334, 0.20833333333333334]');
INSERT INTO "trial_user_attributes" VALUES(45,4,'epochs','2');
INSERT INTO "trial_user_attributes" VALUES(46,4,'samples_per_second','3918.7070348878146');
INSERT INTO "trial_user_attributes" VALUES(47,5,'invalid_combination','["term0: loss ''js'' compares rows as probability distributions, but normalisation ''frobenius'' does not produce them; use normalisation row_softmax or row_sum"]');
INSERT INTO "trial_user_attributes" VALUES(48,6,'objective_config','{"relkd_config": 1, "ce_weight": 0.8271999588271904, "kd": null, "terms": [{"tap": "last_stage", "view": "maxpool", "affinity": {"name": "cosine"}, "normalisation": {"name": "max"}, "loss": {"name": "smooth_l1", "beta": 0.1605386021024387}, "weight": 0.001309534091957225}, {"tap": "last_stage", "view": "avgpool", "affinity": {"name": "sq_euclidean"}, "normalisation": {"name": "row_softmax", "temperature": 1.2690706169542254}, "loss": {"name": "mse"}, "weight": 0.05526728599958412}]}');
INSERT INTO "trial_user_attributes" VALUES(49,6,'seed','0');
INSERT INTO "trial_user_attributes" VALUES(50,6,'versions','{"relkd": "0.1.0", "torch": "2.15.0+cu132", "optuna": "5.1.0", "python": "3.11.7"}');
INSERT INTO "trial_user_attributes" VALUES(51,6,'worker','"vm:8657"');
INSERT INTO "trial_user_attributes" VALUES(52,6,'part_means','{"ce": 2.2858311335245767, "term0": 0.0015537824171284835, "term1": 0.0035631836702426276}');
INSERT INTO "trial_user_attributes" VALUES(53,6,'wall_seconds','0.11401909100095509');
INSERT INTO "trial_user_attributes" VALUES(54,6,'train_seconds','0.1105580879993795');
INSERT INTO "trial_user_attributes" VALUES(55,6,'val_history','[0.20833333333333334, 0.20833333333333334]');
INSERT INTO "trial_user_attributes" VALUES(56,6,'epochs','2');
INSERT INTO "trial_user_attributes" VALUES(57,6,'samples_per_second','3473.2872732219753');
INSERT INTO "trial_user_attributes" VALUES(58,7,'invalid_combination','["term0: normalisation ''row_sum'' needs non-negative input, but affinity ''dot'' can be negative; use one of the affinities cosine01, euclidean, rbf, rbf_taylor, sq_euclidean or another normalisation"]');
INSERT INTO "trial_user_attributes" VALUES(59,8,'objective_config','{"relkd_config": 1, "ce_weight": 0.24020379118767599, "kd": null, "terms": [{"tap": "last_stage", "view": "avgpool", "affinity": {"name": "cosine01"}, "normalisation": {"name": "row_softmax", "temperature": 0.4696065554137848}, "loss": {"name": "kl", "eps": 1e-07}, "weight": 47317.42791854624}]}');
INSERT INTO "trial_user_attributes" VALUES(60,8,'seed','0');
INSERT INTO "trial_user_attributes" VALUES(61,8,'versions','{"relkd": "0.1.0", "torch": "2.15.0+cu132", "optuna": "5.1.0", "python": "3.11.7"}');
INSERT INTO "trial_user_attributes" VALUES(62,8,'worker','"vm:8657"');
INSERT INTO "trial_user_attributes" VALUES(63,8,'part_means','{"ce": 2.357436498006185, "term0": 4.6565585459272064e-05}');
INSERT INTO "trial_user_attributes" VALUES(64,8,'wall_seconds','0.09934520099886868');
INSERT INTO "trial_user_attributes" VALUES(65,8,'train_seconds','0.09385906499846897');
INSERT INTO "trial_user_attributes" VALUES(66,8,'val_history','[0.125]');
INSERT INTO "trial_user_attributes" VALUES(67,8,'epochs','1');
INSERT INTO "trial_user_attributes" VALUES(68,8,'samples_per_second','2045.6202073090321');
INSERT INTO "trial_user_attributes" VALUES(69,8,'pruned_reason','"pruned by the median pruner after epoch 1"');
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
INSERT INTO "trial_values" VALUES(2,2,0,0.125,'FINITE');
INSERT INTO "trial_values" VALUES(3,3,0,0.125,'FINITE');
INSERT INTO "trial_values" VALUES(4,4,0,2.08333333333333342585e-01,'FINITE');
INSERT INTO "trial_values" VALUES(5,6,0,2.08333333333333342585e-01,'FINITE');
INSERT INTO "trial_values" VALUES(6,8,0,0.125,'FINITE');
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
INSERT INTO "trials" VALUES(1,0,1,'COMPLETE','2026-12-02 21:23:34.606146','2026-12-02 21:23:34.767927');
INSERT INTO "trials" VALUES(2,1,1,'COMPLETE','2026-12-02 21:23:34.797119','2026-12-02 21:23:34.967186');
INSERT INTO "trials" VALUES(3,2,1,'COMPLETE','2026-12-02 21:23:34.989492','2026-12-02 21:23:35.184046');
INSERT INTO "trials" VALUES(4,3,1,'COMPLETE','2026-12-02 21:23:35.203098','2026-12-02 21:23:35.398726');
INSERT INTO "trials" VALUES(5,4,1,'PRUNED','2026-12-02 21:23:35.420574','2026-12-02 21:23:35.490265');
INSERT INTO "trials" VALUES(6,5,1,'COMPLETE','2026-12-02 21:23:35.507366','2026-12-02 21:23:35.813511');
INSERT INTO "trials" VALUES(7,6,1,'PRUNED','2026-12-02 21:23:35.832904','2026-12-02 21:23:35.908392');
INSERT INTO "trials" VALUES(8,7,1,'PRUNED','2026-12-02 21:23:35.922705','2026-12-02 21:23:36.181012');
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
