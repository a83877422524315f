CREATE TABLE realms (
    name TEXT PRIMARY KEY,
    enabled BIGINT NOT NULL,
    access_lifespan_s BIGINT NOT NULL,
    sso_idle_s BIGINT NOT NULL,
    sso_max_s BIGINT NOT NULL,
    code_lifespan_s BIGINT NOT NULL,
    refresh_secret TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE clients (
    realm TEXT NOT NULL REFERENCES realms(name) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    secret_hash TEXT,
    public_client BIGINT NOT NULL,
    service_accounts BIGINT NOT NULL,
    direct_grants BIGINT NOT NULL,
    standard_flow BIGINT NOT NULL,
    redirect_uris TEXT NOT NULL,
    default_scopes TEXT NOT NULL,
    optional_scopes TEXT NOT NULL,
    audience TEXT NOT NULL,
    alg TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (realm, client_id)
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    realm TEXT NOT NULL REFERENCES realms(name) ON DELETE CASCADE,
    username TEXT NOT NULL,
    email TEXT,
    email_verified BIGINT NOT NULL,
    first_name TEXT,
    last_name TEXT,
    password_hash TEXT,
    enabled BIGINT NOT NULL,
    service_account_client TEXT,
    created_ms BIGINT NOT NULL,
    UNIQUE (realm, username)
);
CREATE INDEX users_email ON users (realm, email);

CREATE TABLE roles (
    realm TEXT NOT NULL REFERENCES realms(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (realm, name)
);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    realm TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (user_id, role),
    FOREIGN KEY (realm, role) REFERENCES roles(realm, name) ON DELETE CASCADE
);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    realm TEXT NOT NULL REFERENCES realms(name) ON DELETE CASCADE,
    alg TEXT NOT NULL,
    pkcs8 TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    retired_ms BIGINT,
    expires_ms BIGINT
);
CREATE INDEX signing_keys_realm ON signing_keys (realm);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    realm TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    auth_time_s BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL
);

CREATE TABLE refresh_tokens (
    jti TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    used BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE auth_codes (
    code_hash TEXT PRIMARY KEY,
    realm TEXT NOT NULL,
    client_id TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    nonce TEXT,
    code_challenge TEXT,
    challenge_method TEXT,
    used BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    expires_ms BIGINT NOT NULL
);
