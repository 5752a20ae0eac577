-- Run in every database of a PostgreSQL 15.20 (or later 15.x) cluster, as a superuser, right
-- before `pg_upgrade` to a PostgreSQL 18 minor that does not know the `pg_attver` column option
-- (18.6 and older; see docs/operations.md, "Upgrading PostgreSQL from 15 to 18").
--
-- PostgreSQL 15.20 stamps an attribute option `pg_attver=N` on every column it creates.
-- pg_upgrade dumps column options of user tables with the NEW major's pg_dump and restores them
-- into the new cluster, which rejects the unknown option:
--   ERROR:  unrecognized parameter "pg_attver"
-- This removes that one option from the columns of user-created relations (oid >= 16384);
-- every other option is kept.  Nothing else changes; tables and data are not touched.
UPDATE pg_catalog.pg_attribute a
   SET attoptions = nullif(ARRAY(SELECT o FROM unnest(a.attoptions) AS o
                                  WHERE o NOT LIKE 'pg\_attver=%'), '{}')
 WHERE a.attrelid >= 16384
   AND a.attoptions IS NOT NULL
   AND EXISTS (SELECT 1 FROM unnest(a.attoptions) AS o WHERE o LIKE 'pg\_attver=%');
