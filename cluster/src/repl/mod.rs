//! Replication as a sans-IO state machine: a master's stream of write records with
//! offsets, the replication backlog, partial resynchronisation (PSYNC with replication
//! ids), and full synchronisation from a snapshot.
