//! The one endpoint table of the control plane (docs/protocol.md section 5): for each
//! endpoint its subject, request type, reply type and who may call it. The
//! service's dispatcher, its `$SRV` endpoint list, the client's typed
//! methods and [`SUBJECTS`] (every control subject: what APP imports from
//! AUTH, never `unibus.msg.>`) all derive from it, so they cannot drift.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::mail::{MailFetchReply, MailFetchRequest, MailSendReply, MailSendRequest};
use crate::subjects as s;
use crate::wire::{
    AccountReply, AdminDeviceAddRequest, BlockListReply, DeleteReply, DeviceAddRequest, DeviceListOnly,
    DeviceListReply, DeviceReply, DeviceRevokeReply, DeviceRevokeRequest, DeviceSignRequest, Empty,
    InviteCreateReply, InviteCreateRequest, InviteIdRequest, InviteListReply, InviteListRequest, InviteReply,
    LookupReply, LookupRequest, MemberRequest, RegisterRequest, RevokeReply, RoomCreateRequest,
    RoomIdRequest, RoomListReply, RoomListRequest, RoomReply, SignPubRequest, UserListReply, UserListRequest,
    UserReply,
};

/// Who may call an endpoint (before any per-record rule, such as room
/// membership).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Any verified key, guest or user (`unibus.register`).
    Guest,
    /// An active user.
    Member,
    /// An active admin (`unibus.admin.>`).
    Admin,
}

/// One control-plane endpoint: implemented by a zero-sized type per
/// subject, e.g. [`Register`].
pub trait Endpoint {
    /// The request subject.
    const SUBJECT: &'static str;
    /// Who may call it. The callout's publish grants are tested against
    /// it (unibusd `callout::claims`); handlers check it on the record.
    const ACCESS: Access;
    /// The request body; decoding it checks every field.
    type Request: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The success reply body.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

macro_rules! endpoints {
    ($($(#[$doc:meta])* $name:ident = $subject:path, $access:ident, $req:ty => $rep:ty;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl Endpoint for $name {
                const SUBJECT: &'static str = $subject;
                const ACCESS: Access = Access::$access;
                type Request = $req;
                type Reply = $rep;
            }
        )*
        /// Every endpoint: subject and access, in table order.
        pub const ALL: &[(&str, Access)] = &[$(($subject, Access::$access)),*];
        /// Every endpoint's subject, in table order.
        pub const SUBJECTS: &[&str] = &[$($subject),*];
    };
}

endpoints! {
    /// `unibus.register`: redeem an invite.
    Register = s::REGISTER, Guest, RegisterRequest => AccountReply;
    /// `unibus.whoami`: the caller's account and device.
    Whoami = s::WHOAMI, Member, Empty => AccountReply;
    /// `unibus.user.lookup`: the public part of a user.
    UserLookup = s::USER_LOOKUP, Member, LookupRequest => LookupReply;
    /// `unibus.admin.invite.create`: mint an invite.
    AdminInviteCreate = s::ADMIN_INVITE_CREATE, Admin, InviteCreateRequest => InviteCreateReply;
    /// `unibus.admin.invite.list`: one page of invites.
    AdminInviteList = s::ADMIN_INVITE_LIST, Admin, InviteListRequest => InviteListReply;
    /// `unibus.admin.invite.get`: one invite.
    AdminInviteGet = s::ADMIN_INVITE_GET, Admin, InviteIdRequest => InviteReply;
    /// `unibus.admin.invite.cancel`: cancel an invite.
    AdminInviteCancel = s::ADMIN_INVITE_CANCEL, Admin, InviteIdRequest => InviteReply;
    /// `unibus.admin.user.list`: one page of users.
    AdminUserList = s::ADMIN_USER_LIST, Admin, UserListRequest => UserListReply;
    /// `unibus.admin.user.get`: one user.
    AdminUserGet = s::ADMIN_USER_GET, Admin, SignPubRequest => UserReply;
    /// `unibus.admin.user.revoke`: revoke a user and close its connections.
    AdminUserRevoke = s::ADMIN_USER_REVOKE, Admin, SignPubRequest => RevokeReply;
    /// `unibus.admin.user.restore`: restore a revoked user.
    AdminUserRestore = s::ADMIN_USER_RESTORE, Admin, SignPubRequest => UserReply;
    /// `unibus.admin.user.delete`: delete a user and close its connections.
    AdminUserDelete = s::ADMIN_USER_DELETE, Admin, SignPubRequest => DeleteReply;
    /// `unibus.room.create`: create a room.
    RoomCreate = s::ROOM_CREATE, Member, RoomCreateRequest => RoomReply;
    /// `unibus.room.get`: one room.
    RoomGet = s::ROOM_GET, Member, RoomIdRequest => RoomReply;
    /// `unibus.room.list`: the caller's rooms.
    RoomList = s::ROOM_LIST, Member, RoomListRequest => RoomListReply;
    /// `unibus.room.member.add`: add a member.
    RoomMemberAdd = s::ROOM_MEMBER_ADD, Member, MemberRequest => RoomReply;
    /// `unibus.room.member.remove`: remove a member.
    RoomMemberRemove = s::ROOM_MEMBER_REMOVE, Member, MemberRequest => RoomReply;
    /// `unibus.block.add`: block a key.
    BlockAdd = s::BLOCK_ADD, Member, SignPubRequest => BlockListReply;
    /// `unibus.block.remove`: unblock a key.
    BlockRemove = s::BLOCK_REMOVE, Member, SignPubRequest => BlockListReply;
    /// `unibus.block.list`: the caller's block list.
    BlockList = s::BLOCK_LIST, Member, Empty => BlockListReply;
    /// `unibus.device.add`: add a device to the caller's account.
    DeviceAdd = s::DEVICE_ADD, Member, DeviceAddRequest => DeviceReply;
    /// `unibus.device.list`: the caller's account's devices.
    DeviceList = s::DEVICE_LIST, Member, Empty => DeviceListReply;
    /// `unibus.device.revoke`: revoke a device and close its connections.
    DeviceRevoke = s::DEVICE_REVOKE, Member, DeviceRevokeRequest => DeviceRevokeReply;
    /// `unibus.admin.device.add`: recovery device for an account with no
    /// active device.
    AdminDeviceAdd = s::ADMIN_DEVICE_ADD, Admin, AdminDeviceAddRequest => DeviceReply;
    /// `unibus.device.sign`: the first signed list of an account made
    /// before lists.
    DeviceSign = s::DEVICE_SIGN, Member, DeviceSignRequest => DeviceListOnly;
    /// `unibus.mail.send`: store a message for its recipients and deliver
    /// it live.
    MailSend = s::MAIL_SEND, Member, MailSendRequest => MailSendReply;
    /// `unibus.mail.fetch`: one page of a channel's stored messages sealed
    /// for the calling device.
    MailFetch = s::MAIL_FETCH, Member, MailFetchRequest => MailFetchReply;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_subjects_are_unique_and_are_the_control_subjects() {
        let mut seen = std::collections::HashSet::new();
        for (subject, _) in ALL {
            assert!(seen.insert(*subject), "{subject} twice");
        }
        // Written out, not derived: the table must hold exactly the control
        // subjects of docs/protocol.md section 5.
        let design = [
            "unibus.register",
            "unibus.whoami",
            "unibus.user.lookup",
            "unibus.admin.invite.create",
            "unibus.admin.invite.list",
            "unibus.admin.invite.get",
            "unibus.admin.invite.cancel",
            "unibus.admin.user.list",
            "unibus.admin.user.get",
            "unibus.admin.user.revoke",
            "unibus.admin.user.restore",
            "unibus.admin.user.delete",
            "unibus.room.create",
            "unibus.room.get",
            "unibus.room.list",
            "unibus.room.member.add",
            "unibus.room.member.remove",
            "unibus.block.add",
            "unibus.block.remove",
            "unibus.block.list",
            "unibus.device.add",
            "unibus.device.list",
            "unibus.device.revoke",
            "unibus.admin.device.add",
            "unibus.device.sign",
            "unibus.mail.send",
            "unibus.mail.fetch",
        ];
        let mut table: Vec<&str> = SUBJECTS.to_vec();
        let mut want = design.to_vec();
        table.sort_unstable();
        want.sort_unstable();
        assert_eq!(table, want);
    }

    #[test]
    fn access_matches_the_subject_prefix() {
        for (subject, access) in ALL {
            let want = if subject.starts_with("unibus.admin.") {
                Access::Admin
            } else if *subject == s::REGISTER {
                Access::Guest
            } else {
                Access::Member
            };
            assert_eq!(*access, want, "{subject}");
        }
    }
}
