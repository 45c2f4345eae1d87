//! unibus: the command-line client (filled in by the client issue).

fn main() {
    eprintln!("unibus CLI: not yet available; see README (unibusd dev, bootstrap-admin)");
    std::process::exit(2);
}
