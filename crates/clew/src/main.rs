//! `clew`: the binary. Thin glue: parses the command line and config, wires receivers → pipeline →
//! store → query, and runs the CLI subcommands.

fn main() {
    println!("clew");
}
