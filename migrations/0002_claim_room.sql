-- How many jobs of a queue one claim may take: 0 while paused, all it asks for when the
-- queue has no fleet-wide cap, and otherwise the room left under the cap. Capped queues
-- serialize their claims on an advisory lock held to the end of the claiming transaction;
-- being VOLATILE, the count below reads a snapshot taken after the lock, so two workers can
-- never both see the same free room.
CREATE FUNCTION kiln_claim_room(q text, wanted integer) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s kiln_queues%ROWTYPE;
    running integer;
BEGIN
    SELECT * INTO s FROM kiln_queues WHERE name = q;
    IF NOT FOUND THEN
        RETURN wanted;
    END IF;
    IF s.paused THEN
        RETURN 0;
    END IF;
    IF s.max_running IS NULL THEN
        RETURN wanted;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('kiln.queue.' || q, 0));
    SELECT count(*) INTO running FROM kiln_jobs WHERE state = 'running' AND queue = q;
    RETURN greatest(0, least(wanted, s.max_running - running));
END;
$$;
