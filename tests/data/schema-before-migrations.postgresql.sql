-- The reference system's schema as `release` created it before migrations (2026-11-27 to 2026-12-04), postgresql.

CREATE TABLE payments (
    id SERIAL NOT NULL,
    idempotency_key VARCHAR(255),
    user_id BIGINT NOT NULL,
    amount NUMERIC(12, 2) NOT NULL,
    currency VARCHAR(3) NOT NULL,
    task_id VARCHAR(64) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (idempotency_key),
    UNIQUE (task_id)
);

CREATE TABLE secrets (
    name VARCHAR(64) NOT NULL,
    value VARCHAR(255) NOT NULL,
    PRIMARY KEY (name)
);

CREATE TABLE tasks (
    id VARCHAR(64) NOT NULL,
    kind VARCHAR(64) NOT NULL,
    status VARCHAR(16) NOT NULL,
    idempotency_key VARCHAR(255),
    request_fingerprint VARCHAR(64),
    result JSON,
    error TEXT,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (idempotency_key)
);

CREATE TABLE users (
    id SERIAL NOT NULL,
    name VARCHAR(200) NOT NULL,
    email VARCHAR(254) NOT NULL,
    created_by VARCHAR(64) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (email),
    UNIQUE (created_by)
);
