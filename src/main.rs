//! `deckhand`: see `deckhand --help` and the README.
fn main() {
    std::process::exit(deckhand::cli::main());
}
