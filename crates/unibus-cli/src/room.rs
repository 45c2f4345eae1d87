//! Rooms: `room create|list|show|add|remove`.

use std::path::Path;

use crate::args::RoomCmd;
use crate::error::CliError;
use crate::output::{Out, room_line};
use crate::session::connect;
use unibus::proto::wire::RoomListRequest;

/// Runs a room subcommand.
///
/// # Errors
/// [`CliError`]: the identity file, the connection, the service's codes.
pub(crate) async fn room(url: &str, identity: &Path, cmd: RoomCmd, out: &Out) -> Result<(), CliError> {
    let c = connect(url, identity).await?;
    match cmd {
        RoomCmd::Create { name } => out.room(&c.create_room(&name).await?),
        RoomCmd::List { page } => {
            let r = c.list_rooms(&RoomListRequest { limit: page.limit, cursor: page.cursor }).await?;
            out.page("rooms", &r.rooms, &r.next, room_line);
        }
        RoomCmd::Show { id } => out.room(&c.get_room(&id).await?),
        RoomCmd::Add { id, sign_pub } => out.room(&c.add_member(&id, &sign_pub).await?),
        RoomCmd::Remove { id, sign_pub } => out.room(&c.remove_member(&id, &sign_pub).await?),
    }
    Ok(())
}
