//! Integration tests: every test drives unibus through a real nats-server.

mod harness;

mod admission;
mod failure;
mod invites;
mod malformed;
mod tooling;
