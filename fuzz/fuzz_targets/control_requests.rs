//! Every control-plane request parser and field check on arbitrary bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus_proto::keys::{self, InviteToken};
use unibus_proto::wire::{self, *};
use unibusd::service::cursor::Cursors;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = proto::decode::<RegisterRequest>(data) {
        let _ = InviteToken::parse(&r.invite);
        let _ = keys::parse_kex_pub("kex_pub", &r.kex_pub);
        if let Some(n) = &r.name {
            let _ = validate_name("name", n);
        }
    }
    if let Ok(r) = proto::decode::<InviteCreateRequest>(data) {
        let _ = r.ttl();
        let _ = r.note();
    }
    if let Ok(r) = proto::decode::<InviteListRequest>(data) {
        let _ = page_limit(r.limit);
        if let Some(c) = &r.cursor {
            let _ = Cursors::new(b"fuzz").open(c, "invites", "");
        }
    }
    if let Ok(r) = proto::decode::<UserListRequest>(data) {
        let _ = page_limit(r.limit);
    }
    if let Ok(r) = proto::decode::<RoomListRequest>(data) {
        let _ = page_limit(r.limit);
    }
    if let Ok(r) = proto::decode::<SignPubRequest>(data) {
        let _ = keys::parse_sign_pub("sign_pub", &r.sign_pub);
    }
    if let Ok(r) = proto::decode::<IdRequest>(data) {
        let _ = keys::parse_hex32("id", &r.id);
    }
    if let Ok(r) = proto::decode::<RoomCreateRequest>(data) {
        let _ = validate_name("name", &r.name);
    }
    if let Ok(r) = proto::decode::<MemberRequest>(data) {
        let _ = keys::parse_sign_pub("sign_pub", &r.sign_pub);
    }
    let _ = proto::decode::<Empty>(data);
});
