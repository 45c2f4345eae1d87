//! Every control-plane request parser and field check on arbitrary bodies
//! (keys and ids are checked by decoding itself: `SignPub`, `KexPub`,
//! `RoomId`, `InviteId`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use unibus_proto::keys::InviteToken;
use unibus_proto::wire::{self, *};
use unibusd::service::cursor::Cursors;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = wire::decode::<RegisterRequest>(data) {
        let _ = InviteToken::parse(&r.invite);
        assert_eq!(r.kex_pub.len(), 64);
        assert_eq!(r.kex_sig.as_str().len(), unibus_proto::binding::KEX_SIG_LEN);
        if let Some(n) = &r.name {
            let _ = validate_name("name", n);
        }
    }
    if let Ok(r) = wire::decode::<InviteCreateRequest>(data) {
        let _ = r.ttl();
        let _ = r.note();
    }
    if let Ok(r) = wire::decode::<InviteListRequest>(data) {
        let _ = page_limit(r.limit);
        if let Some(c) = &r.cursor {
            let _ = Cursors::new(b"fuzz").open(c, "invites", "");
        }
    }
    if let Ok(r) = wire::decode::<UserListRequest>(data) {
        let _ = page_limit(r.limit);
    }
    if let Ok(r) = wire::decode::<RoomListRequest>(data) {
        let _ = page_limit(r.limit);
    }
    if let Ok(r) = wire::decode::<SignPubRequest>(data) {
        assert_eq!(r.sign_pub.len(), 64);
    }
    if let Ok(r) = wire::decode::<InviteIdRequest>(data) {
        assert_eq!(r.id.len(), 64);
    }
    if let Ok(r) = wire::decode::<RoomIdRequest>(data) {
        assert_eq!(r.id.len(), 32);
    }
    if let Ok(r) = wire::decode::<RoomCreateRequest>(data) {
        let _ = validate_name("name", &r.name);
    }
    if let Ok(r) = wire::decode::<MemberRequest>(data) {
        assert_eq!((r.id.len(), r.sign_pub.len()), (32, 64));
    }
    if let Ok(r) = wire::decode::<DeviceAddRequest>(data) {
        assert_eq!(r.kex_sig.as_str().len(), unibus_proto::binding::KEX_SIG_LEN);
        let _ = unibus_proto::binding::verify_binding(&r.device.key(), &r.device, &r.kex_pub, &r.kex_sig);
    }
    if let Ok(r) = wire::decode::<AdminDeviceAddRequest>(data) {
        let _ = unibus_proto::binding::verify_binding(&r.account.key(), &r.device, &r.kex_pub, &r.kex_sig);
    }
    if let Ok(r) = wire::decode::<DeviceRevokeRequest>(data) {
        assert_eq!(r.device.len(), 64);
    }
    let _ = wire::decode::<Empty>(data);
});
