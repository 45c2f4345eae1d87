//! Integration tests: every test drives unibus through a real nats-server.
//! The helpers are in `support`; every other module holds tests only.

mod support;

mod admin;
mod admission;
mod blocks;
mod callout_refusals;
mod cas;
mod catchup;
mod cli;
mod cluster;
mod device_races;
mod device_rules;
mod devicelists;
mod devicelists_e2e;
mod devices;
mod devices_cli;
mod devices_e2e;
mod example;
mod failure;
mod faults;
mod flood;
mod freshness;
mod hostile;
mod invites;
mod limits;
mod mail;
mod mail_faults;
mod malformed;
mod messaging;
mod reflect;
mod revocation;
mod rooms;
mod scale;
mod tooling;
