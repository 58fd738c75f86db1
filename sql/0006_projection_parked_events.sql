-- 0004: events the projection refused, kept instead of stalling it.
--
-- A record on the events topic that cannot be applied for a reason retrying
-- will not fix (it does not decode as a helmq event, or PostgreSQL refuses it:
-- a constraint violation, an invalid value a buggy producer wrote under a
-- valid schema) is parked here by helmq-projector, which then applies the
-- rest of its batch in order and commits its Kafka offsets past it. Nothing is
-- lost: the row holds the record as it was on the topic and why it was
-- refused. Rows are keyed by their place on the topic, so a replay or a
-- rebuild that meets the same record again updates its row instead of adding
-- one. The projection's rebuild leaves this table alone: it is a record of
-- refused input, for an operator to read, fix at the source, and delete.
--
-- Readable by helmq_admin only: it holds events of every tenant.

CREATE TABLE helmq.parked_events (
    topic          text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset   bigint NOT NULL,
    record_key     bytea,             -- the Kafka key as it was (tenantId/namespace/releaseName)
    record_value   bytea,             -- the Kafka value as it was (Avro single-object encoding)
    event_id       text,              -- from the decoded event, when it decoded
    command_id     text,
    payload        jsonb,             -- the decoded event, as the projector passed it to PostgreSQL
    payload_text   text,              -- the same, only when PostgreSQL would not take it as jsonb
    error_sqlstate text,              -- PostgreSQL's SQLSTATE; null when the record did not decode
    error_message  text NOT NULL,
    parked_at      timestamptz NOT NULL DEFAULT now(),
    times_parked   integer NOT NULL DEFAULT 1,
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

-- Parks one record (see above). p_payload is the decoded event as JSON text,
-- or null; text that is not valid jsonb is kept in payload_text instead, so
-- parking itself never refuses a record.
CREATE FUNCTION helmq.park_event(p_topic text, p_partition integer, p_offset bigint, p_key bytea,
                                 p_value bytea, p_payload text, p_sqlstate text, p_message text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    doc jsonb;
    raw text;
BEGIN
    BEGIN
        doc := p_payload::jsonb;
    EXCEPTION WHEN OTHERS THEN
        doc := NULL;
        raw := p_payload;
    END;
    INSERT INTO helmq.parked_events AS p (topic, kafka_partition, kafka_offset, record_key, record_value,
                                          event_id, command_id, payload, payload_text, error_sqlstate,
                                          error_message)
    VALUES (p_topic, p_partition, p_offset, p_key, p_value, doc->>'eventId', doc->>'commandId', doc, raw,
            p_sqlstate, p_message)
    ON CONFLICT (topic, kafka_partition, kafka_offset) DO UPDATE SET
        record_key = EXCLUDED.record_key, record_value = EXCLUDED.record_value,
        event_id = EXCLUDED.event_id, command_id = EXCLUDED.command_id, payload = EXCLUDED.payload,
        payload_text = EXCLUDED.payload_text, error_sqlstate = EXCLUDED.error_sqlstate,
        error_message = EXCLUDED.error_message, parked_at = now(), times_parked = p.times_parked + 1;
END $$;

REVOKE ALL ON helmq.parked_events FROM PUBLIC;
REVOKE ALL ON FUNCTION helmq.park_event(text, integer, bigint, bytea, bytea, text, text, text) FROM PUBLIC;
GRANT SELECT ON helmq.parked_events TO helmq_admin;
