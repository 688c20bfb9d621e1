-- KYC: performer submissions and their review. The minimal `kyc` row of 0003 (one per user,
-- read by payouts and going live) stays the per-user summary; each attempt is a submission.
-- Personal data (legal name, date of birth, document number, MRZ) is kept only inside an
-- encrypted vault object (form_object); the row holds what the queue and the rules need.

ALTER TABLE kyc DROP CONSTRAINT kyc_status_check;
ALTER TABLE kyc ADD CONSTRAINT kyc_status_check
    CHECK (status IN ('not_started', 'pending', 'submitted', 'approved', 'rejected',
                      'needs_resubmission', 'expired'));
ALTER TABLE kyc
    ADD COLUMN submission_id        bigint,
    ADD COLUMN reason               text,
    ADD COLUMN document_expires_on  date;

CREATE TABLE kyc_submissions (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id                bigint NOT NULL REFERENCES users (id),
    -- submitted → approved | rejected | needs_resubmission
    status                 text NOT NULL DEFAULT 'submitted'
                           CHECK (status IN ('submitted', 'approved', 'rejected',
                                             'needs_resubmission')),
    country                text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    document_type          text NOT NULL
                           CHECK (document_type IN ('passport', 'id_card', 'driving_licence')),
    document_expires_on    date NOT NULL,
    -- HMAC-SHA256 (kyc_index_key) of type, country and number: finds the same document on
    -- another account without keeping the number in clear.
    document_index         text NOT NULL CHECK (document_index ~ '^[0-9a-f]{64}$'),
    form_object            uuid REFERENCES vault_objects (id),
    front_object           uuid REFERENCES vault_objects (id),
    back_object            uuid REFERENCES vault_objects (id),
    selfie_object          uuid REFERENCES vault_objects (id),
    agreement_version      text NOT NULL,
    agreement_accepted_at  timestamptz NOT NULL,
    -- Automatic findings for the reviewer: duplicate_document, mrz_mismatch, dob_mismatch, ...
    flags                  text[] NOT NULL DEFAULT '{}',
    checks                 jsonb NOT NULL DEFAULT '{}',
    submitted_at           timestamptz NOT NULL DEFAULT now(),
    decided_at             timestamptz,
    decided_by             bigint REFERENCES users (id),
    decision_reason        text CHECK (length(decision_reason) <= 1000),
    purged_at              timestamptz,
    CHECK ((status = 'submitted') = (decided_at IS NULL))
);
CREATE INDEX kyc_submissions_queue_idx ON kyc_submissions (submitted_at, id)
    WHERE status = 'submitted';
CREATE INDEX kyc_submissions_user_idx ON kyc_submissions (user_id, id);
CREATE INDEX kyc_submissions_document_idx ON kyc_submissions (document_index)
    WHERE purged_at IS NULL;

ALTER TABLE kyc ADD CONSTRAINT kyc_submission_fk
    FOREIGN KEY (submission_id) REFERENCES kyc_submissions (id);
