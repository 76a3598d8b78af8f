//! `drover`: the command-line client.

/// The same allocator as the coordinator's (see there): decoding the worker list of a fleet
/// of thousands is mostly small objects.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    drover::cli::main()
}
