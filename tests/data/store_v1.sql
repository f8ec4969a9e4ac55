-- The schema of a version 1 run store, as siqkit wrote it: the store's tables, and the
-- training and evaluation tables the train stage created on first use (here from before
-- per-task evaluation, so eval_outputs has no task column). tests/test_store.py upgrades it.
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE SEQUENCE IF NOT EXISTS stage_run_id;
-- one row per stage execution: its resolved settings and its counts
CREATE TABLE IF NOT EXISTS stage_runs (
    id BIGINT PRIMARY KEY DEFAULT nextval('stage_run_id'),
    stage VARCHAR NOT NULL, status VARCHAR NOT NULL,      -- running | done | failed
    started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP,
    settings JSON, counts JSON, siqkit_version VARCHAR, error VARCHAR);
-- images, stored once under media/ by the sha256 of their bytes
CREATE TABLE IF NOT EXISTS media (
    hash VARCHAR PRIMARY KEY, format VARCHAR, width INTEGER, height INTEGER, size_bytes BIGINT);
-- the seed pool; columns mirror siqkit.records.Seed, plus the pool selection flag
CREATE TABLE IF NOT EXISTS seeds (
    id VARCHAR PRIMARY KEY, source VARCHAR NOT NULL, split VARCHAR NOT NULL,
    question VARCHAR NOT NULL, answer VARCHAR, images VARCHAR[], metadata JSON,
    origin VARCHAR, selected BOOLEAN NOT NULL DEFAULT TRUE);
-- which version of each seed source is fully ingested (for skipping on rerun)
CREATE TABLE IF NOT EXISTS source_runs (
    source VARCHAR PRIMARY KEY, fingerprint VARCHAR, finished_at TIMESTAMP, counts JSON);
-- malformed input rows, with where and why
CREATE TABLE IF NOT EXISTS quarantine (
    stage VARCHAR NOT NULL, source VARCHAR, file VARCHAR, line INTEGER, field VARCHAR,
    reason VARCHAR NOT NULL, detail VARCHAR);
-- teacher outputs: one row per work key (seed, teacher, prompt, sampling, sample index)
CREATE TABLE IF NOT EXISTS generations (
    key VARCHAR PRIMARY KEY, seed_id VARCHAR NOT NULL, teacher VARCHAR NOT NULL,
    teacher_identity JSON, prompt JSON, sampling JSON, sample_index INTEGER,
    raw VARCHAR, reasoning VARCHAR, answer VARCHAR,
    parse_status VARCHAR, parse_reason VARCHAR, finish_reason VARCHAR, error VARCHAR,
    prompt_tokens INTEGER, completion_tokens INTEGER, seconds DOUBLE, created_at TIMESTAMP);
-- throughput of each teacher in each generate run
CREATE TABLE IF NOT EXISTS teacher_runs (
    stage_run BIGINT, teacher VARCHAR, samples INTEGER, errors INTEGER, seconds DOUBLE,
    completion_tokens BIGINT, samples_per_s DOUBLE, tokens_per_s DOUBLE);
-- one row per generation: answer check, judge, labels, difficulty, reasoning statistics
CREATE TABLE IF NOT EXISTS annotations (
    key VARCHAR PRIMARY KEY, seed_id VARCHAR NOT NULL, teacher VARCHAR NOT NULL, settings VARCHAR,
    correct BOOLEAN, correct_detail VARCHAR, answer_kind VARCHAR,
    judge_difficulty INTEGER, judge_quality INTEGER, judge_tags VARCHAR[], judge_error VARCHAR,
    labels VARCHAR[], reasoning_tokens INTEGER, answer_tokens INTEGER, steps INTEGER, step_rule VARCHAR,
    pass_rate DOUBLE, samples_judged INTEGER, difficulty INTEGER, difficulty_bucket VARCHAR,
    difficulty_source VARCHAR);
-- items a stage removed on purpose, with why
CREATE TABLE IF NOT EXISTS drops (
    stage VARCHAR NOT NULL, item VARCHAR, source VARCHAR, reason VARCHAR NOT NULL, detail VARCHAR);
-- the curate stage's decision on every trace it considered: kept, or dropped by which layer
-- (rules | dedup | selection) and why; duplicate clusters are named by their kept member
CREATE TABLE IF NOT EXISTS curation (
    key VARCHAR PRIMARY KEY, seed_id VARCHAR NOT NULL, teacher VARCHAR NOT NULL, split VARCHAR,
    kept BOOLEAN NOT NULL, layer VARCHAR, reason VARCHAR, detail VARCHAR,
    question_cluster VARCHAR, reasoning_cluster VARCHAR, difficulty_bucket VARCHAR, labels VARCHAR[],
    rank INTEGER, settings VARCHAR);
-- membership of the curated set ('curated') and of each named subset, with its export folder
CREATE TABLE IF NOT EXISTS curation_subsets (
    subset VARCHAR NOT NULL, key VARCHAR NOT NULL, path VARCHAR, PRIMARY KEY (subset, key));
-- perceptual fingerprint of stored images (64-bit DCT hash, 8x8 RGB thumbnail; NULL: unreadable)
CREATE TABLE IF NOT EXISTS media_phash (hash VARCHAR PRIMARY KEY, phash UBIGINT, thumb BLOB);
-- one row per curriculum stage (align, instruct, reason, ...) of a train run
CREATE TABLE IF NOT EXISTS train_stages (
    stage_run BIGINT, position INTEGER NOT NULL, stage VARCHAR NOT NULL,
    status VARCHAR NOT NULL, reason VARCHAR,                 -- done | skipped (and why)
    data VARCHAR, method VARCHAR, frozen VARCHAR[], quantization VARCHAR, precision VARCHAR,
    micro_batch INTEGER, grad_accum INTEGER, gradient_checkpointing BOOLEAN, plan_source VARCHAR,
    examples INTEGER, dropped JSON, steps INTEGER, tokens BIGINT, tokens_per_s DOUBLE,
    peak_memory_bytes BIGINT, first_loss DOUBLE, final_loss DOUBLE, resumed_from VARCHAR,
    input_model VARCHAR, adapter_dir VARCHAR, merged_dir VARCHAR, fingerprint VARCHAR);
-- one row per optimizer step
CREATE TABLE IF NOT EXISTS train_steps (
    stage_run BIGINT, stage VARCHAR NOT NULL, step INTEGER NOT NULL, loss DOUBLE, lr DOUBLE,
    grad_norm DOUBLE, tokens INTEGER, target_tokens INTEGER, seconds DOUBLE);
-- one row per evaluation of the student: before training and after each stage
CREATE TABLE IF NOT EXISTS eval_runs (
    stage_run BIGINT, after_stage VARCHAR NOT NULL, model_dir VARCHAR, seeds INTEGER, judged INTEGER,
    correct INTEGER, accuracy DOUBLE, format_ok DOUBLE, mean_reasoning_tokens DOUBLE, parse_status JSON);
-- the student's output for each held-out seed in each evaluation
CREATE TABLE IF NOT EXISTS eval_outputs (
    stage_run BIGINT, after_stage VARCHAR NOT NULL, seed_id VARCHAR NOT NULL, output VARCHAR,
    reasoning VARCHAR, answer VARCHAR, parse_status VARCHAR, correct BOOLEAN, correct_detail VARCHAR,
    reasoning_tokens INTEGER);
