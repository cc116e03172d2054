//! Cluster mode against a real Redis and real opswire processes: frames
//! cross nodes in order, resumes work across nodes and restarts, and
//! Redis or node failures lose nothing that was acknowledged.

mod delivery;
mod failures;
pub(crate) mod harness;
mod random;
