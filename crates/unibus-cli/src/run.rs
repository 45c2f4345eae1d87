//! Dispatching one invocation: each subcommand to the module that runs it.

use crate::account::{self, BlockOp};
use crate::args::{Cli, Command};
use crate::error::CliError;
use crate::output::Out;
use crate::{admin, device, messages, room, verify};

/// Runs one CLI invocation.
///
/// # Errors
/// [`CliError`]; [`crate::exit_code`] maps it to the process exit code.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let out = Out { json: cli.json };
    let (url, identity) = (cli.url.as_str(), cli.identity.as_path());
    match cli.command {
        Command::Keygen => account::keygen(identity, &out),
        Command::Register { invite, name } => {
            account::register(url, identity, &invite, name.as_deref(), &out).await
        }
        Command::Whoami => account::whoami(url, identity, &out).await,
        Command::Invite(cmd) => admin::invite(url, identity, cmd, &out).await,
        Command::User(cmd) => admin::user(url, identity, cmd, &out).await,
        Command::Room(cmd) => room::room(url, identity, cmd, &out).await,
        Command::Send(args) => messages::send(url, identity, args, &out).await,
        Command::Listen { count } => messages::listen(url, identity, count, &out).await,
        Command::Chat(target) => messages::chat(url, identity, target, &out).await,
        Command::Block { sign_pub } => account::block(url, identity, BlockOp::Add(&sign_pub), &out).await,
        Command::Unblock { sign_pub } => {
            account::block(url, identity, BlockOp::Remove(&sign_pub), &out).await
        }
        Command::Blocked => account::block(url, identity, BlockOp::List, &out).await,
        Command::Device(cmd) => device::device(url, identity, cmd, &out).await,
        Command::Admin(cmd) => device::admin(url, identity, cmd, &out).await,
        Command::Verify { account, accept } => verify::verify(url, identity, &account, accept, &out).await,
    }
}
