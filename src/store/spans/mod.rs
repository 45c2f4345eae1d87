//! The operations that write more than one bucket, each with its undo.
//!
//! JetStream KV has no transaction across keys, so each of these is a
//! sequence of single-record compare-and-swaps ([`super::cas`]) in an order
//! chosen so that a crash between two steps leaves the store *stricter*,
//! never looser, and the same request retried completes it. Where a check
//! after a write can find the write wrong, the operation carries the undo
//! that takes exactly that write back. The per-bucket files
//! (`users.rs`, `devices.rs`, `rooms.rs`, ...) hold the single-record
//! steps. Each rule these steps judge is written once: the device caps in
//! [`devices`], the members-per-room cap in `rooms::join`, the rooms-per-user
//! cap in `memberships`, the last admin in `admins`; who may do what (the
//! last-device and seniority rules included) is the handler's closure,
//! judged inside the CAS on the record written over.
//!
//! | operation | writes, in order | after a crash | undo |
//! |---|---|---|---|
//! | register ([`accounts`]) | invite `used` → device claim → account `create` (with list version 1) → invite `completed` → list history | the invite is spent; the same key retried completes it; a version missing from the history is kept by the next lookup or change | none: every step is idempotent for the same key |
//! | account delete ([`accounts`]) | rooms and reservations → invite `completed` → account delete → rooms again → block list → device records → list history → its DM channel's messages | a deleted key keeps no room, invite or list (device records of a gone account count as guests) | the delete is taken back (`create`) when it left no admin |
//! | device add ([`devices`]) | replaced list kept in the history → device claim → account lists it (and its next list) → device record final → new list kept | a claim no account lists: denied at connect, the add retried completes it | a refused add frees its claim; an add whose claim was taken meanwhile unlists itself |
//! | device revoke ([`devices`]) | replaced list kept in the history → account marks it revoked (and its next list) → device record → new list kept | the account record is the authority; the record follows on the next write | [`super::Store::undo_revoke`] when the caller or the last admin fails a check after the write |
//! | room create ([`rooms`]) | reservation → room `create` | a reservation without a room: pruned at the cap | the reservation is released |
//! | member add ([`rooms`]) | reservation → room lists it → reservation confirmed → member still registered | a reservation without membership: pruned at the cap | the member is taken back out and its reservation released |
//! | member remove, leave all rooms ([`rooms`]) | room stops listing it → reservation released | a reservation without membership: pruned at the cap | none needed |

mod accounts;
pub(crate) mod devices;
mod rooms;
