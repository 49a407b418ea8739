//! Models of the peers.
