//! Every subject, bucket, header and account name that unibus puts on the
//! wire. Service, callout, client and tests take names from here, so a
//! rename happens in one place.

/// Control plane: redeem an invite (guests and users may publish here).
pub const REGISTER: &str = "unibus.register";
/// Control plane: the caller's own user record.
pub const WHOAMI: &str = "unibus.whoami";
/// Control plane: public part of another active user's record.
pub const USER_LOOKUP: &str = "unibus.user.lookup";
/// Control plane: mint an invite (admin).
pub const ADMIN_INVITE_CREATE: &str = "unibus.admin.invite.create";

/// Admin: list invites.
pub const ADMIN_INVITE_LIST: &str = "unibus.admin.invite.list";
/// Admin: one invite.
pub const ADMIN_INVITE_GET: &str = "unibus.admin.invite.get";
/// Admin: cancel an invite.
pub const ADMIN_INVITE_CANCEL: &str = "unibus.admin.invite.cancel";
/// Admin: list users.
pub const ADMIN_USER_LIST: &str = "unibus.admin.user.list";
/// Admin: one user.
pub const ADMIN_USER_GET: &str = "unibus.admin.user.get";
/// Admin: revoke a user (and close its connections).
pub const ADMIN_USER_REVOKE: &str = "unibus.admin.user.revoke";
/// Admin: restore a revoked user.
pub const ADMIN_USER_RESTORE: &str = "unibus.admin.user.restore";
/// Admin: hard-delete a user (and close its connections).
pub const ADMIN_USER_DELETE: &str = "unibus.admin.user.delete";
/// Create a room.
pub const ROOM_CREATE: &str = "unibus.room.create";
/// One room.
pub const ROOM_GET: &str = "unibus.room.get";
/// Rooms the caller is in.
pub const ROOM_LIST: &str = "unibus.room.list";
/// Add a member to a room.
pub const ROOM_MEMBER_ADD: &str = "unibus.room.member.add";
/// Remove a member from a room.
pub const ROOM_MEMBER_REMOVE: &str = "unibus.room.member.remove";

/// Block a key (the caller's block list).
pub const BLOCK_ADD: &str = "unibus.block.add";
/// Unblock a key.
pub const BLOCK_REMOVE: &str = "unibus.block.remove";
/// The caller's block list.
pub const BLOCK_LIST: &str = "unibus.block.list";

/// `unibus.device.add`: add a device to the caller's account.
pub const DEVICE_ADD: &str = "unibus.device.add";
/// `unibus.device.list`: the caller's account's devices.
pub const DEVICE_LIST: &str = "unibus.device.list";
/// `unibus.device.revoke`: revoke a device.
pub const DEVICE_REVOKE: &str = "unibus.device.revoke";
/// `unibus.admin.device.add`: recovery device for an account with none.
pub const ADMIN_DEVICE_ADD: &str = "unibus.admin.device.add";
/// `unibus.device.sign`: version 1 of the device list of an account made
/// before lists (DESIGN section 11).
pub const DEVICE_SIGN: &str = "unibus.device.sign";
/// `unibus.mail.send`: store a message for its recipients' devices and
/// deliver it live (docs/protocol.md section 10).
pub const MAIL_SEND: &str = "unibus.mail.send";
/// `unibus.mail.fetch`: one page of the stored messages of a channel that
/// are sealed for the calling device.
pub const MAIL_FETCH: &str = "unibus.mail.fetch";
/// Every mail subject (granted to every active user).
pub const MAIL_ALL: &str = "unibus.mail.*";
/// Every data-plane message subject: unibusd publishes stored messages
/// there (AUTH exports it as a stream, APP imports it).
pub const MSG_ALL: &str = "unibus.msg.>";
/// Every device subject (granted to every active user).
pub const DEVICE_ALL: &str = "unibus.device.>";
/// Notices unibusd publishes to accounts (exported by AUTH as a stream,
/// imported by APP; clients may only subscribe to their own).
pub const NOTICE_ALL: &str = "unibus.notice.>";

/// Where unibusd announces a device added to or revoked from `account`
/// (docs/protocol.md section 8): its active devices subscribe.
pub fn device_notice(account: &str) -> String {
    format!("unibus.notice.devices.{account}")
}

/// Where unibusd announces that a device of `account` was revoked, or the
/// account itself revoked or deleted (docs/protocol.md section 8): every
/// active user may subscribe, so that contacts stop trusting a cached
/// device set at once.
pub fn revoked_notice(account: &str) -> String {
    format!("unibus.notice.revoked.{account}")
}

/// Every account's [`revoked_notice`] subject (what active users may
/// subscribe).
pub const REVOKED_NOTICE_ALL: &str = "unibus.notice.revoked.*";

/// Header on everything unibusd publishes that is not a reply (notices);
/// replies never carry it, so a reply aimed at a notice subject (a
/// requester chooses its reply subject, docs/protocol.md section 2) is
/// never taken for a notice.
pub const HDR_NOTICE: &str = "Unibus-Notice";
/// [`HDR_NOTICE`] value on [`device_notice`] subjects.
pub const NOTICE_DEVICES: &str = "devices";
/// [`HDR_NOTICE`] value on [`revoked_notice`] subjects.
pub const NOTICE_REVOKED: &str = "revoked";

/// Wildcard for every admin subject (granted to admins only).
pub const ADMIN_ALL: &str = "unibus.admin.>";
/// Room control subjects (`unibus.room.create`, ...).
pub const ROOM_ALL: &str = "unibus.room.*";
/// Room membership control subjects.
pub const ROOM_MEMBER_ALL: &str = "unibus.room.member.*";
/// Block-list control subjects (granted to active users).
pub const BLOCK_ALL: &str = "unibus.block.*";
/// Publish pattern for direct messages to anyone.
pub const MSG_DM_ALL: &str = "unibus.msg.dm.*";

/// Subject the nats-server publishes auth callout requests on.
pub const AUTH_CALLOUT: &str = "$SYS.REQ.USER.AUTH";
/// Queue group of the callout responders.
pub const AUTH_QUEUE: &str = "unibus-auth";
/// Name of the NATS micro service (and its queue group).
pub const SERVICE_NAME: &str = "unibus";

/// JetStream KV bucket of user records, keyed by `sign_pub` hex.
pub const BUCKET_USERS: &str = "UNIBUS_users";
/// JetStream KV bucket of invites, keyed by SHA-256(token) hex.
pub const BUCKET_INVITES: &str = "UNIBUS_invites";
/// JetStream KV bucket of rooms, keyed by room id.
pub const BUCKET_ROOMS: &str = "UNIBUS_rooms";

/// JetStream KV bucket of block lists, keyed by the blocking `sign_pub`.
pub const BUCKET_BLOCKS: &str = "UNIBUS_blocks";
/// JetStream KV bucket of per-user room reservations (the rooms-per-user
/// cap), keyed by `sign_pub`.
pub const BUCKET_MEMBERSHIPS: &str = "UNIBUS_memberships";
/// JetStream KV bucket of device records, keyed by device key
/// (docs/protocol.md section 8).
pub const BUCKET_DEVICES: &str = "UNIBUS_devices";
/// JetStream KV bucket of every version of every account's signed device
/// list (DESIGN section 11), keyed by [`device_list_key`].
pub const BUCKET_DEVICE_LISTS: &str = "UNIBUS_devicelists";

/// The key of version `version` of `account`'s device list in
/// [`BUCKET_DEVICE_LISTS`]: `<account>.<version>`, version in decimal.
pub fn device_list_key(account: &str, version: u64) -> String {
    format!("{account}.{version}")
}
/// JetStream KV bucket of stored messages (docs/protocol.md section 10),
/// keyed by [`mail_key`].
pub const BUCKET_MAIL: &str = "UNIBUS_mail";
/// JetStream KV bucket of the envelope bytes each account stored per UTC
/// day (the daily mail limit, shared by every unibusd instance), keyed
/// `<account>.<yyyy-mm-dd>`.
pub const BUCKET_MAIL_QUOTA: &str = "UNIBUS_mail_quota";

/// The key of a stored message in [`BUCKET_MAIL`]: its channel (`dm.<B>`
/// or `room.<R>`, see [`mail_channel_dm`], [`mail_channel_room`]), then
/// the envelope's own `from` and `id`.
pub fn mail_key(channel: &str, from: &str, id: &str) -> String {
    format!("{channel}.{from}.{id}")
}

/// The mail channel of the DMs to account `account` (hex) and of the
/// copies its devices send each other.
pub fn mail_channel_dm(account: &str) -> String {
    format!("dm.{account}")
}

/// The mail channel of room `room` (id hex).
pub fn mail_channel_room(room: &str) -> String {
    format!("room.{room}")
}

/// Header on a message unibusd delivers live after storing it: its `seq`
/// in the mail bucket (docs/protocol.md section 10).
pub const HDR_SEQ: &str = "Unibus-Seq";

/// System-account request every server answers with its identity.
pub const SYS_SERVER_PING: &str = "$SYS.REQ.SERVER.PING";
/// System-account request listing connections on every server.
pub const SYS_CONNZ_PING: &str = "$SYS.REQ.SERVER.PING.CONNZ";

/// System-account request closing one connection on server `server_id`.
pub fn sys_kick(server_id: &str) -> String {
    format!("$SYS.REQ.SERVER.{server_id}.KICK")
}

/// System-account request listing connections on server `server_id`.
pub fn sys_connz(server_id: &str) -> String {
    format!("$SYS.REQ.SERVER.{server_id}.CONNZ")
}

/// System-account request every server answers with its VARZ.
pub const SYS_VARZ_PING: &str = "$SYS.REQ.SERVER.PING.VARZ";

/// Header the server stamps on requests crossing the APP -> AUTH import.
pub const HDR_REQUEST_INFO: &str = "Nats-Request-Info";
/// Header carrying the server's xkey on sealed callout requests.
pub const HDR_SERVER_XKEY: &str = "Nats-Server-Xkey";
/// Micro-service error headers.
pub const HDR_SERVICE_ERROR: &str = "Nats-Service-Error";
/// Micro-service error code header (numeric).
pub const HDR_SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";

/// Account every member's device lands in; hard-coded as the user JWT
/// audience.
pub const ACCOUNT_APP: &str = "APP";
/// Account guests (keys no account lists) land in: it imports only
/// `unibus.register`, and its connections may send at most 16 KiB per
/// message (nats.conf), so a guest cannot flood unibusd with large bodies
/// nor aim a reply at a member's subject (docs/protocol.md section 9).
pub const ACCOUNT_GUEST: &str = "GUEST";

/// Prefix of invite links: `unibus://invite/<token>`.
pub const INVITE_LINK_PREFIX: &str = "unibus://invite/";

/// Inbox prefix of the user with this `sign_pub` hex.
pub fn inbox_prefix(sign_pub: &str) -> String {
    format!("_INBOX.{sign_pub}")
}

/// Room message subject.
pub fn room_msg(room_id: &str) -> String {
    format!("unibus.msg.room.{room_id}")
}

/// Direct-message subject of the user with this `sign_pub` hex.
pub fn dm(sign_pub: &str) -> String {
    format!("unibus.msg.dm.{sign_pub}")
}

/// Advisory the server publishes in the callout's account (AUTH) for every
/// refused connect, with the refusal's `reason` (read by the tests).
pub const AUTH_ERROR_ADVISORY: &str = "$SYS.ACCOUNT.CLIENT.AUTH.ERR";
