//! The `unibus` command line: flags and subcommands (clap), and their
//! execution against the client library. Human-readable output by default,
//! `--json` for scripts; failures print the wire error code and exit
//! non-zero (see [`exit_code`]).
//!
//! Modules depend only downwards: `run` dispatches to one module per
//! command group (`account`, `admin`, `room`, `messages`, `device`,
//! `verify`); those use `session` (identity, connection, what commands
//! share), `output` and `error`; the clap types live in `args`.

mod account;
mod admin;
mod args;
mod device;
mod error;
mod messages;
mod output;
mod room;
mod run;
mod session;
mod verify;

pub use args::{
    AdminCmd, AdminDeviceCmd, Cli, Command, DeviceCmd, InviteCmd, InviteStatusArg, PageArgs, RoleArg,
    RoomCmd, SendArgs, Target, UserCmd, UserStatusArg,
};
pub use error::{CliError, exit_code};
pub use output::line_out;
pub use run::run;
