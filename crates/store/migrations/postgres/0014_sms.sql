-- The SMS and WhatsApp channel (through Twilio). A project's Twilio connection (its auth token
-- signs every inbound webhook and authenticates every send; never shown back), the short codes
-- each request was sent with to each number (a reply names one), a counter per number that hands
-- them out, the numbers that replied STOP, the inbound messages already acted on (a replayed
-- webhook changes nothing), and a person's phone number.
CREATE TABLE twilio_connections (
    project_id     TEXT PRIMARY KEY REFERENCES projects(id),
    account_sid    TEXT NOT NULL,
    auth_token     TEXT NOT NULL,
    from_number    TEXT NOT NULL,     -- E.164, e.g. +15550001111
    whatsapp_from  TEXT,              -- E.164 of the WhatsApp sender, without the whatsapp: prefix
    connected_at   BIGINT NOT NULL
);

CREATE TABLE sms_codes (
    project_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    medium      TEXT NOT NULL CHECK (medium IN ('sms', 'whatsapp')),
    phone       TEXT NOT NULL,        -- E.164
    code        TEXT NOT NULL,        -- four digits
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, kind, call_id, medium, phone)
);
CREATE INDEX sms_codes_phone ON sms_codes (phone, medium, code);

CREATE TABLE sms_numbers (
    phone      TEXT PRIMARY KEY,
    next_code  BIGINT NOT NULL
);

CREATE TABLE sms_opt_outs (
    phone       TEXT NOT NULL,
    medium      TEXT NOT NULL,
    opted_out_at BIGINT NOT NULL,
    PRIMARY KEY (phone, medium)
);

CREATE TABLE twilio_inbound (
    message_sid  TEXT PRIMARY KEY,
    received_at  BIGINT NOT NULL
);
CREATE INDEX twilio_inbound_received ON twilio_inbound (received_at);

ALTER TABLE users ADD COLUMN phone TEXT;
CREATE UNIQUE INDEX users_phone ON users (phone) WHERE phone IS NOT NULL;
