//! Integration tests: every test drives unibus through a real nats-server.

mod harness;

mod admin;
mod admission;
mod cli;
mod cluster;
mod failure;
mod faults;
mod freshness;
mod invites;
mod malformed;
mod messaging;
mod revocation;
mod rooms;
mod scale;
mod syscheck;
mod tooling;
