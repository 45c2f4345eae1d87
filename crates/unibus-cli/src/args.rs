//! The command line's grammar: every flag, subcommand and value (clap
//! types), and the conversions of flag values to the wire's enums. Parsing
//! only; the commands run in their own modules.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use unibus::proto::records::{InviteStatus, Role, UserStatus};

/// unibus: talk to a unibus bus with your own key.
///
/// Your identity is an Ed25519 key in a NATS nkey seed file (create it with
/// `unibus keygen`). Register it with an invite link from an admin, then use
/// the bus: `unibus whoami`, `unibus send`, `unibus listen`, `unibus chat`.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    /// NATS server URL(s), comma-separated.
    #[arg(long, global = true, env = "UNIBUS_URL", default_value = "nats://127.0.0.1:4222")]
    pub url: String,
    /// Identity file (NATS nkey seed, mode 0600).
    #[arg(long, global = true, env = "UNIBUS_IDENTITY", default_value_os_t = default_identity())]
    pub identity: PathBuf,
    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  unibus keygen
  unibus register 'unibus://invite/9f1c...' --name alice
  unibus invite create --ttl-secs 3600          (admin; prints the link and a QR code)
  unibus room create plans
  unibus send --to <sign_pub> 'hello'
  unibus send --room <room id> 'hello all'
  unibus listen
  unibus chat --room <room id>
  unibus block <sign_pub>                       (its DMs are dropped; it cannot add you to rooms)
  unibus --identity laptop.nk device request --account <id>   (on the new device: shows a QR code)
  unibus device add 'unibus://device/...'       (on a device of the account)
  unibus verify <account>                       (the safety number to compare in person)";

fn default_identity() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".config/unibus/identity.nk")
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new identity file (refuses to overwrite one).
    Keygen,
    /// Redeem an invite (token or unibus:// link) for your key.
    Register {
        /// Token or `unibus://invite/<token>[?url=...]` link.
        invite: String,
        /// Display name (default: first 8 hex characters of your key).
        #[arg(long)]
        name: Option<String>,
    },
    /// Show your own user record.
    Whoami,
    /// Invites (admin).
    #[command(subcommand)]
    Invite(InviteCmd),
    /// Users (admin).
    #[command(subcommand)]
    User(UserCmd),
    /// Rooms.
    #[command(subcommand)]
    Room(RoomCmd),
    /// Send one end-to-end encrypted message.
    Send(SendArgs),
    /// Print incoming messages, and notices of devices added to or revoked
    /// from your account, until interrupted (or revoked).
    Listen {
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Interactive chat: lines you type are sent, incoming ones printed.
    Chat(Target),
    /// Block a key: it cannot add you to rooms, and its DMs are dropped.
    Block {
        /// The key to block (sign_pub hex).
        sign_pub: String,
    },
    /// Unblock a key.
    Unblock {
        /// The key to unblock (sign_pub hex).
        sign_pub: String,
    },
    /// List the keys you have blocked.
    Blocked,
    /// Devices of your account: request (on a new device), add, list,
    /// revoke.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Admin: recovery of an account that has no device left.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Show the safety number of you and an account (digits and a QR
    /// code) to compare in person, and its signed device list: the version
    /// you accepted, every change since and who signed it. Every device
    /// binding is checked first.
    Verify {
        /// The account id (sign_pub hex).
        account: String,
        /// Accept the account's current device list (after you checked with
        /// its owner, say after a recovery): messages are sealed to its
        /// devices again.
        #[arg(long)]
        accept: bool,
    },
}

/// Invite subcommands.
#[derive(Debug, Subcommand)]
pub enum InviteCmd {
    /// Mint an invite and show its link and a QR code.
    Create {
        /// Lifetime in seconds (60..=2592000).
        #[arg(long)]
        ttl_secs: Option<u64>,
        /// Role of the new user.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
        /// Note for the audit trail.
        #[arg(long)]
        note: Option<String>,
    },
    /// List invites.
    List {
        /// Only this status.
        #[arg(long, value_enum)]
        status: Option<InviteStatusArg>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one invite.
    Show {
        /// Invite id.
        id: String,
    },
    /// Cancel a pending invite.
    Cancel {
        /// Invite id.
        id: String,
    },
}

/// User subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// List users.
    List {
        /// Only this status.
        #[arg(long, value_enum)]
        status: Option<UserStatusArg>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one user.
    Show {
        /// The user's sign_pub (hex).
        sign_pub: String,
    },
    /// Revoke a user: its connections close at once.
    Revoke {
        /// The user's sign_pub (hex).
        sign_pub: String,
    },
    /// Restore a revoked user.
    Restore {
        /// The user's sign_pub (hex).
        sign_pub: String,
    },
    /// Delete a user for good (it leaves every room).
    Delete {
        /// The user's sign_pub (hex).
        sign_pub: String,
    },
}

/// Room subcommands.
#[derive(Debug, Subcommand)]
pub enum RoomCmd {
    /// Create a room (you own it).
    Create {
        /// Room name.
        name: String,
    },
    /// List your rooms.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show a room.
    Show {
        /// Room id.
        id: String,
    },
    /// Add a member (owner or admin).
    Add {
        /// Room id.
        id: String,
        /// Member's sign_pub (hex).
        sign_pub: String,
    },
    /// Remove a member (owner, admin, or yourself).
    Remove {
        /// Room id.
        id: String,
        /// Member's sign_pub (hex).
        sign_pub: String,
    },
}

/// Paging flags.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Page size (1..=1000).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Continue after this cursor (`next` of the previous page).
    #[arg(long)]
    pub cursor: Option<String>,
}

/// Where a message goes.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A user's sign_pub (hex): a direct message.
    #[arg(long)]
    pub to: Option<String>,
    /// A room id: a room message.
    #[arg(long)]
    pub room: Option<String>,
}

/// `send` flags.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub target: Target,
    /// The message text.
    #[arg(required = true)]
    pub text: Vec<String>,
}

/// Device subcommands.
#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// On a NEW device: make its key (in --identity) for an account and
    /// show the bundle that a device of that account adds.
    Request {
        /// The account to join (its id: the first device's sign_pub hex).
        #[arg(long)]
        account: String,
        /// Name of this device (default: first 8 hex characters of its key).
        #[arg(long)]
        name: Option<String>,
    },
    /// Add a new device to your account from its bundle.
    Add {
        /// The bundle the new device shows (`unibus://device/...` or JSON).
        bundle: String,
    },
    /// List your account's devices (every status; `*` marks this one).
    List,
    /// Revoke a device of your account for good: yourself or a newer one
    /// (an admin: any, of any account with --account). Its connections
    /// close at once.
    Revoke {
        /// The device key (hex).
        device: String,
        /// An admin revoking a device of another account: that account's
        /// id (hex).
        #[arg(long)]
        account: Option<String>,
    },
}

/// Admin subcommands that are not about invites or users.
#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Devices (recovery).
    #[command(subcommand)]
    Device(AdminDeviceCmd),
}

/// Admin device subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminDeviceCmd {
    /// Recovery: add a device to an account that has no active device.
    Add {
        /// The bundle the new device shows (`unibus://device/...` or JSON).
        bundle: String,
    },
}

/// Role flag values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// Member.
    Member,
    /// Admin.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Member => Role::Member,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// Invite status flag values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum InviteStatusArg {
    /// Pending.
    Pending,
    /// Used.
    Used,
    /// Cancelled.
    Cancelled,
    /// Expired.
    Expired,
}

impl From<InviteStatusArg> for InviteStatus {
    fn from(s: InviteStatusArg) -> InviteStatus {
        match s {
            InviteStatusArg::Pending => InviteStatus::Pending,
            InviteStatusArg::Used => InviteStatus::Used,
            InviteStatusArg::Cancelled => InviteStatus::Cancelled,
            InviteStatusArg::Expired => InviteStatus::Expired,
        }
    }
}

/// User status flag values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum UserStatusArg {
    /// Active.
    Active,
    /// Revoked.
    Revoked,
}

impl From<UserStatusArg> for UserStatus {
    fn from(s: UserStatusArg) -> UserStatus {
        match s {
            UserStatusArg::Active => UserStatus::Active,
            UserStatusArg::Revoked => UserStatus::Revoked,
        }
    }
}
