//! End-to-end tests: real servers on 127.0.0.1:0, real clients (tonic, reqwest).

mod common;
mod grpc;
mod http;
mod zipkin;
