//! Video over gRPC, against a real server on 127.0.0.1: a vPDQ list imported with ImportList,
//! a video uploaded in chunks with ScanUpload (matched against the vPDQ list and an image list,
//! a report naming the frames), the same video as hashes only (MatchHashes with the vPDQ
//! signal), the upload limit, and metrics by media type.

mod common;

use baken::decode::video::VideoLimits;
use baken::hashing::vpdq;
use baken::service::pb;
use common::service::{authed, channel, create_list, import_csv, kind, metrics_text, start};
use common::video::{slide_pdq, slideshow};
use pb::list_service_client::ListServiceClient;
use pb::report_service_client::ReportServiceClient;
use pb::scan_service_client::ScanServiceClient;
use tonic::Code;

const H264: &[&str] = &["-c:v", "libx264", "-pix_fmt", "yuv420p"];

fn chunks(first: pb::ScanRequest, rest: &[u8], size: usize) -> Vec<pb::ScanRequest> {
    let mut msgs = vec![first];
    msgs.extend(rest.chunks(size).map(|c| pb::ScanRequest {
        image: c.to_vec(),
        ..Default::default()
    }));
    msgs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn videos_upload_in_chunks_and_match_as_hashes_only() {
    let video = slideshow(11, 10, "", H264, "v.mp4");
    let frames = vpdq::hash_video(&video, &VideoLimits::default(), 1.0)
        .unwrap()
        .1;
    let limit = video.len() as u64 + 4096;
    let (running, _dir) = start(|c| c.video.max_input_bytes = limit).await;
    let ch = channel(running.addr).await;
    let mut lists = ListServiceClient::new(ch.clone());
    let mut scan = ScanServiceClient::new(ch.clone());

    // A vPDQ list from Meta's file form, under the id the caller gives.
    create_list(&mut lists, "videos", None).await;
    let text = vpdq::to_meta(&frames);
    let mut msgs = vec![pb::ImportListRequest {
        part: Some(pb::import_list_request::Part::Header(pb::ImportHeader {
            list: "videos".into(),
            format: pb::ListFormat::Vpdq as i32,
            source: "clip.vpdq".into(),
            entry_id: "clip-1".into(),
        })),
    }];
    msgs.extend(text.as_bytes().chunks(100).map(|c| pb::ImportListRequest {
        part: Some(pb::import_list_request::Part::Data(c.to_vec())),
    }));
    let r = lists
        .import_list(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.counts.unwrap().added, frames.len() as u64);
    // An image list holding the still shown from second 5.
    let pdq = slide_pdq(11, 5);
    create_list(&mut lists, "images", None).await;
    import_csv(
        &mut lists,
        "images",
        &format!("pdq,{pdq},A1,still-5\n"),
        None,
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;

    // Upload in 16 KiB chunks, the settings and a report context in the first message.
    let first = pb::ScanRequest {
        image: video[..1000].to_vec(),
        return_hashes: true,
        ..common::service::scan_with_context(Vec::new(), "upload-1")
    };
    let resp = scan
        .scan_upload(tokio_stream::iter(chunks(first, &video[1000..], 16 << 10)))
        .await
        .unwrap()
        .into_inner();
    let result = resp.result.unwrap();
    let v = result
        .matches
        .iter()
        .find(|m| m.list == "videos")
        .unwrap_or_else(|| panic!("{result:?}"));
    assert_eq!((v.hash_type.as_str(), v.entry.as_str()), ("vpdq", "clip-1"));
    let vm = v.video.as_ref().unwrap();
    assert_eq!(vm.query_match_percent, Some(100.0));
    assert_eq!(vm.compared_match_percent, Some(100.0));
    assert_eq!(vm.timestamps.len(), 10);
    assert_eq!((vm.query_frames, vm.listed_frames), (10, Some(10)));
    let i = result.matches.iter().find(|m| m.list == "images").unwrap();
    assert_eq!(i.entry, "still-5");
    assert_eq!(i.video.as_ref().unwrap().timestamps, vec![5.0]);
    let hashes = resp.hashes.unwrap();
    assert_eq!(hashes.vpdq.len(), 10);
    assert_eq!(hashes.vpdq[5].hash, frames[5].hash.to_hex());
    assert_eq!(hashes.vpdq_seconds_per_hash, 1.0);
    // The report names the matched frames by time.
    assert!(!resp.report_id.is_empty(), "{}", resp.report_note);
    let mut reports = ReportServiceClient::new(ch.clone());
    let rep = reports
        .get_report(pb::GetReportRequest {
            report_id: resp.report_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let body: serde_json::Value = serde_json::from_slice(&rep.body_json).unwrap();
    let ms = body["files"][0]["matches"].as_array().unwrap();
    let vd = ms.iter().find(|m| m["list"] == "videos").unwrap();
    assert_eq!(vd["video"]["query_frames_matched"], 10);
    assert_eq!(vd["video"]["timestamps_ms"][3], 3000);
    let id = ms.iter().find(|m| m["list"] == "images").unwrap();
    assert_eq!(id["video"]["timestamps_ms"], serde_json::json!([5000]));

    // Hashes only: the vPDQ signal as HMA keeps it; the video stays with the caller.
    let m = scan
        .match_hashes(pb::MatchHashesRequest {
            hashes: vec![pb::HashValue {
                r#type: "vpdq".into(),
                value: vpdq::to_signal(&frames),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    assert!(m.matches.iter().any(|x| x.entry == "clip-1"), "{m:?}");
    assert!(m.matches.iter().any(|x| x.entry == "still-5"), "{m:?}");
    // A malformed vPDQ value is INVALID_ARGUMENT naming the item.
    let e = scan
        .match_hashes(pb::MatchHashesRequest {
            hashes: vec![pb::HashValue {
                r#type: "vpdq".into(),
                value: "0,100,zz,0.0".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("hashes[0]"), "{}", e.message());

    // Over the video limit: refused while it arrives.
    let mut big = video.clone();
    big.extend(std::iter::repeat_n(0u8, 8192));
    let e = scan
        .scan_upload(tokio_stream::iter(chunks(
            pb::ScanRequest::default(),
            &big,
            16 << 10,
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(kind(&e), "too_large");
    // An empty stream.
    let e = scan
        .scan_upload(authed(tokio_stream::iter(Vec::new()), None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let text = metrics_text(running.metrics_addr.unwrap()).await;
    for needle in [
        "baken_scans_total{outcome=\"match\",media=\"video\"} 1",
        "baken_scans_total{outcome=\"match\",media=\"hashes\"} 1",
        "baken_matches_total{list=\"videos\",hash_type=\"vpdq\"} 2",
        "baken_requests_total{rpc=\"ScanUpload\",code=\"OK\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}
