-- The fleet's identity: the cluster's system identifier (fixed at initdb, unique per cluster)
-- and the database's name. Workers of one fleet share one database; two fleets on one engine
-- (a test per database, two deployments on one cluster) never share both.
SELECT (SELECT system_identifier FROM pg_control_system())::text || '/' || current_database()
