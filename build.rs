//! Generates the gRPC code (messages, clients, servers) from `proto/` and the encoded file
//! descriptor set that server reflection serves. protoc comes from `protoc-bin-vendored`, so
//! building Baken needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/baken/v1/hashing.proto",
        "proto/baken/v1/scan.proto",
        "proto/baken/v1/lists.proto",
        "proto/baken/v1/reports.proto",
        "proto/baken/v1/replication.proto",
        "proto/baken/v1/admin.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("baken_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
