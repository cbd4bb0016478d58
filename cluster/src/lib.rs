//! larder's peer mesh. `proto` holds the Redis Cluster control plane as a deterministic
//! state machine: no sockets, no clocks, no threads.
