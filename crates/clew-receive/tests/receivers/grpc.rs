//! OTLP/gRPC receiver against a real tonic client.

use crate::common::*;
use bytes::{Buf, BufMut, Bytes};
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::Message;
use clew_model::SinkError;
use clew_receive::{
    serve_otlp_grpc, Outcome, Protocol, ReceiverConfig, ReceiverMetrics, RejectReason,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

struct Server {
    addr: SocketAddr,
    metrics: ReceiverMetrics,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), clew_receive::ReceiveError>>>,
}

impl Server {
    async fn start(sink: Arc<dyn clew_model::SpanSink>, cfg: ReceiverConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = ReceiverMetrics::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_otlp_grpc(
            listener,
            sink,
            cfg,
            metrics.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            metrics,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn client(&self) -> TraceServiceClient<Channel> {
        TraceServiceClient::new(self.channel().await)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

fn with_tenant(
    req: ExportTraceServiceRequest,
    key: &'static str,
    tenant: &str,
) -> tonic::Request<ExportTraceServiceRequest> {
    let mut r = tonic::Request::new(req);
    r.metadata_mut().insert(key, tenant.parse().unwrap());
    r
}

#[tokio::test]
async fn export_is_accepted_with_and_without_gzip() {
    let sink = Arc::new(CollectingSink::default());
    let s = Server::start(sink_dyn(sink.clone()), ReceiverConfig::default()).await;
    let resp = s
        .client()
        .await
        .export(good_request(3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.partial_success, None);
    let mut gz = s
        .client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    gz.export(good_request(2)).await.unwrap();
    assert_eq!(sink.span_count(), 5);
    assert_eq!(sink.batches()[0].tenant, clew_model::Tenant::default());
    assert_eq!(s.metrics.spans_accepted(Protocol::OtlpGrpc), 5);
    assert_eq!(s.metrics.requests(Protocol::OtlpGrpc, Outcome::Ok), 2);
    s.stop().await;
}

#[tokio::test]
async fn invalid_ids_give_partial_success() {
    let sink = Arc::new(CollectingSink::default());
    let s = Server::start(sink_dyn(sink.clone()), ReceiverConfig::default()).await;
    let resp = s
        .client()
        .await
        .export(mixed_request())
        .await
        .unwrap()
        .into_inner();
    let partial = resp.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("all zeros"),
        "{}",
        partial.error_message
    );
    assert_eq!(sink.span_count(), 2);
    // All spans rejected: still OK, nothing sent to the sink.
    let resp = s
        .client()
        .await
        .export(request(vec![span(vec![0; 16], vec![0; 8], "x")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 1);
    assert_eq!(sink.batches().len(), 1);
    assert_eq!(
        s.metrics
            .spans_rejected(Protocol::OtlpGrpc, RejectReason::InvalidId),
        3
    );
    s.stop().await;
}

#[tokio::test]
async fn tenant_metadata_is_used_and_validated() {
    let sink = Arc::new(CollectingSink::default());
    let s = Server::start(sink_dyn(sink.clone()), ReceiverConfig::default()).await;
    let mut client = s.client().await;
    client
        .export(with_tenant(good_request(1), "x-scope-orgid", "team-a"))
        .await
        .unwrap();
    assert_eq!(sink.batches()[0].tenant.as_str(), "team-a");
    let err = client
        .export(with_tenant(good_request(1), "x-scope-orgid", "a/b"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("X-Scope-OrgID"), "{}", err.message());
    assert_eq!(
        s.metrics
            .requests(Protocol::OtlpGrpc, Outcome::InvalidTenant),
        1
    );
    client.export(good_request(1)).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn overload_is_unavailable_with_retry_info() {
    let s = Server::start(
        Arc::new(FailingSink(overloaded())),
        ReceiverConfig::default(),
    )
    .await;
    let err = s.client().await.export(good_request(2)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("retry after 7s"),
        "{}",
        err.message()
    );
    // grpc-status-details-bin holds a google.rpc.Status with a RetryInfo.
    let details = err.details();
    assert!(!details.is_empty());
    let text = String::from_utf8_lossy(details);
    assert!(
        text.contains("type.googleapis.com/google.rpc.RetryInfo"),
        "{text}"
    );
    assert_eq!(
        s.metrics
            .spans_rejected(Protocol::OtlpGrpc, RejectReason::Overloaded),
        2
    );
    s.stop().await;
}

#[tokio::test]
async fn sink_errors_map_to_codes() {
    for (e, code) in [
        (SinkError::ShuttingDown, tonic::Code::Unavailable),
        (SinkError::Internal("io".into()), tonic::Code::Unavailable),
        (
            SinkError::Invalid("bad".into()),
            tonic::Code::InvalidArgument,
        ),
    ] {
        let s = Server::start(Arc::new(FailingSink(e.clone())), ReceiverConfig::default()).await;
        let err = s.client().await.export(good_request(1)).await.unwrap_err();
        assert_eq!(err.code(), code, "{e:?}");
        s.stop().await;
    }
}

#[tokio::test]
async fn oversized_messages_are_refused_and_server_survives() {
    let sink = Arc::new(CollectingSink::default());
    let s = Server::start(sink_dyn(sink.clone()), small_cfg(4096)).await;
    let big = request(
        (0..300)
            .map(|i| span(vec![1; 16], vec![(i % 250) as u8 + 1; 8], &"n".repeat(30)))
            .collect(),
    );
    assert!(big.encoded_len() > 4096);
    let err = s.client().await.export(big.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());
    // Compressed under the limit, decompressed over it.
    let mut gz = s.client().await.send_compressed(CompressionEncoding::Gzip);
    let err = gz.export(big).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    s.client().await.export(good_request(1)).await.unwrap();
    assert_eq!(sink.span_count(), 1);
    s.stop().await;
}

/// A codec that sends raw bytes, to put garbage on the wire.
#[derive(Default, Clone)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

async fn raw_export(channel: Channel, body: Vec<u8>) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(tonic::Request::new(Bytes::from(body)), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn garbage_and_truncated_protobuf_are_refused() {
    let sink = Arc::new(CollectingSink::default());
    let s = Server::start(sink_dyn(sink.clone()), ReceiverConfig::default()).await;
    let err = raw_export(s.channel().await, b"\xff\xff\xff\xff\xff garbage".to_vec())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "undecodable requests are InvalidArgument per OTLP (tonic alone says INTERNAL): {err:?}"
    );
    let full = good_request(3).encode_to_vec();
    let err = raw_export(s.channel().await, full[..full.len() - 3].to_vec())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "undecodable requests are InvalidArgument per OTLP (tonic alone says INTERNAL): {err:?}"
    );
    // The same bytes, complete, are accepted through the raw path too.
    let ok = raw_export(s.channel().await, full).await.unwrap();
    assert!(ok.is_empty(), "empty ExportTraceServiceResponse");
    assert_eq!(sink.span_count(), 3);
    s.stop().await;
}

#[tokio::test]
async fn bad_config_is_an_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = ReceiverConfig {
        tenant_header: "no spaces allowed".into(),
        ..Default::default()
    };
    let r = serve_otlp_grpc(
        listener,
        Arc::new(CollectingSink::default()),
        cfg,
        ReceiverMetrics::new(),
        async {},
    )
    .await;
    assert!(matches!(r, Err(clew_receive::ReceiveError::Config(_))));
}

#[tokio::test]
async fn request_metadata_is_kept_when_configured() {
    let sink = Arc::new(CollectingSink::default());
    let cfg = ReceiverConfig {
        include_metadata: true,
        ..Default::default()
    };
    let s = Server::start(sink_dyn(sink.clone()), cfg).await;
    let mut req = with_tenant(good_request(1), "x-client-id", "svc-a");
    req.metadata_mut()
        .insert("authorization", "Bearer secret".parse().unwrap());
    s.client().await.export(req).await.unwrap();
    let m = sink.batches()[0].metadata.clone();
    assert_eq!(m.get("x-client-id"), Some("svc-a"));
    assert!(m.get("authorization").is_none());
    assert!(m.iter().all(|(k, _)| !k.starts_with("grpc-")));
    s.stop().await;
}
