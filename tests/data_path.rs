//! One data path: `baken match`, `baken scan` and the gRPC Scan of the real server (one data
//! directory, one list) answer the same list, entry, hash type, distance and transform for the
//! same images — an exact copy, a JPEG re-encoding, a rotation, an unrelated image — and agree
//! that a broken file is an error.

mod common;

use common::{baken_at as baken, json_lines};

use std::collections::BTreeMap;
use std::path::Path;

use baken::hashing::{Algorithm, HashOptions, Hasher};
use baken::service::pb;
use pb::scan_service_client::ScanServiceClient;

/// (list, entry, hash_type, distance, transform) of every match, sorted.
type Found = Vec<(String, String, String, u64, String)>;

fn from_json(matches: &serde_json::Value) -> Found {
    let mut v: Found = matches
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["list"].as_str().unwrap().to_string(),
                m["entry"].as_str().unwrap().to_string(),
                m["hash_type"].as_str().unwrap().to_string(),
                m["distance"].as_u64().unwrap(),
                m["transform"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// RGB pixels turned a quarter clockwise.
fn rotate90(px: &[u8], w: u32, h: u32) -> Vec<u8> {
    let (w, h) = (w as usize, h as usize);
    let mut out = vec![0u8; px.len()];
    for y in 0..h {
        for x in 0..w {
            let (nx, ny) = (h - 1 - y, x);
            let (s, d) = ((y * w + x) * 3, (ny * h + nx) * 3);
            out[d..d + 3].copy_from_slice(&px[s..s + 3]);
        }
    }
    out
}

#[test]
fn match_scan_and_grpc_scan_agree() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();

    // Three originals in the list, by PDQ and MD5.
    let (w, h) = (640u32, 480u32);
    let px: Vec<Vec<u8>> = (1..=3)
        .map(|s| common::generated_image(w, h, 3, s))
        .collect();
    let originals: Vec<Vec<u8>> = px.iter().map(|p| common::rgb_png(p, w, h)).collect();
    let hasher = Hasher::new(HashOptions {
        algorithms: vec![Algorithm::Pdq, Algorithm::Md5],
        ..HashOptions::default()
    });
    let mut csv = String::from("hash_type,hash,external_id\n");
    for (k, o) in originals.iter().enumerate() {
        let out = hasher.hash_bytes(o).unwrap();
        csv += &format!("pdq,{},orig-{k}\n", out.pdq.unwrap().hash);
        csv += &format!("md5,{},orig-{k}-md5\n", out.md5.unwrap());
    }
    let list_file = dir.path().join("list.csv");
    std::fs::write(&list_file, csv).unwrap();
    common::cli_list_from_csv(&data, "known", &[], &list_file);

    // The queries.
    let jpeg = baken::decode::jpeg::encode(&px[1], w, h, 3, 80, false).unwrap();
    let rotated = common::rgb_png(&rotate90(&px[2], w, h), h, w);
    let mut broken = common::generated_png(300, 200, 7);
    broken.truncate(broken.len() / 2);
    let queries: Vec<(&str, Vec<u8>)> = vec![
        ("copy.png", originals[0].clone()),
        ("reencoded.jpg", jpeg),
        ("rotated.png", rotated),
        ("other.png", common::generated_png(500, 400, 99)),
        ("broken.png", broken),
    ];
    for (name, bytes) in &queries {
        std::fs::write(images.join(name), bytes).unwrap();
    }

    // baken match: one line per file, in argument order.
    let out = baken(&data)
        .arg("match")
        .args(queries.iter().map(|(n, _)| images.join(n)))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an error and matches: exit 2");
    let mut by_match: BTreeMap<String, Result<Found, ()>> = BTreeMap::new();
    for l in json_lines(&out.stdout) {
        let file = Path::new(l["file"].as_str().unwrap());
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let r = if l.get("error").is_some() {
            Err(())
        } else {
            Ok(from_json(&l["matches"]))
        };
        by_match.insert(name, r);
    }

    // baken scan of the directory: a line per file with --all.
    let out = baken(&data)
        .args(["scan", "--all"])
        .arg(&images)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let mut by_scan: BTreeMap<String, Result<Found, ()>> = BTreeMap::new();
    for l in json_lines(&out.stdout) {
        let Some(item) = l["item"].as_str() else {
            continue; // the summary
        };
        let name = Path::new(item)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let r = match l["status"].as_str().unwrap() {
            "error" => Err(()),
            "no_match" => Ok(Vec::new()),
            _ => Ok(from_json(&l["matches"])),
        };
        by_scan.insert(name, r);
    }

    // The real server on the same data directory, called as a client would.
    let mut cmd = baken(&data);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
        "--no-demo",
    ]);
    let (_server, addr) = common::spawn_serve(cmd);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut by_grpc: BTreeMap<String, Result<Found, ()>> = BTreeMap::new();
    rt.block_on(async {
        let mut client = ScanServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        for (name, bytes) in &queries {
            let r = client
                .scan(pb::ScanRequest {
                    image: bytes.clone(),
                    ..Default::default()
                })
                .await;
            let found = match r {
                Err(s) => {
                    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{name}: {s:?}");
                    Err(())
                }
                Ok(resp) => {
                    let result = resp.into_inner().result.unwrap();
                    let mut v: Found = result
                        .matches
                        .iter()
                        .map(|m| {
                            (
                                m.list.clone(),
                                m.entry.clone(),
                                m.hash_type.clone(),
                                u64::from(m.distance),
                                m.transform.clone(),
                            )
                        })
                        .collect();
                    v.sort();
                    Ok(v)
                }
            };
            by_grpc.insert(name.to_string(), found);
        }
    });

    assert_eq!(by_match.len(), queries.len());
    assert_eq!(by_match, by_scan, "baken match and baken scan disagree");
    assert_eq!(by_match, by_grpc, "baken match and the gRPC Scan disagree");

    // And what they agree on is right.
    let copy = by_match["copy.png"].as_ref().unwrap();
    assert!(copy.contains(&(
        "known".into(),
        "orig-0-md5".into(),
        "md5".into(),
        0,
        "".into()
    )));
    assert!(copy.contains(&(
        "known".into(),
        "orig-0".into(),
        "pdq".into(),
        0,
        "orig".into()
    )));
    let jpeg = by_match["reencoded.jpg"].as_ref().unwrap();
    assert_eq!(jpeg.len(), 1, "{jpeg:?}");
    assert_eq!((jpeg[0].1.as_str(), jpeg[0].2.as_str()), ("orig-1", "pdq"));
    assert!(jpeg[0].3 <= 31, "{jpeg:?}");
    let rot = by_match["rotated.png"].as_ref().unwrap();
    assert_eq!(rot.len(), 1, "{rot:?}");
    assert_eq!(rot[0].1, "orig-2");
    assert_ne!(
        rot[0].4, "orig",
        "matched through a dihedral variant: {rot:?}"
    );
    assert_eq!(by_match["other.png"], Ok(Vec::new()));
    assert_eq!(by_match["broken.png"], Err(()));
}
