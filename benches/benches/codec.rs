//! Wire codec cost per call: encode and decode of a typical request and response.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use kmsp11_proto::{
    decode, encode, Body, DataOut, MechParam, Mechanism, OpInit, Request, Response,
};

fn codec(c: &mut Criterion) {
    // A typical request: C_SignInit with PSS parameters.
    let pss = MechParam::RsaPkcsPss {
        hash_alg: 0x250,
        mgf: 2,
        salt_len: 32,
    };
    let init = Request::SignInit(OpInit {
        session: 0x10002,
        key: 0x20003,
        mechanism: Mechanism {
            mechanism: 0x43,
            param: pss,
        },
    });
    let sign = Request::Sign(DataOut {
        session: 0x10002,
        data: Some(vec![7u8; 32]),
        out: Some(256),
    });
    let resp = Response {
        rv: 0,
        body: Body::Output {
            len: 256,
            data: Some(vec![9u8; 256]),
        },
    };
    let big = Request::Sign(DataOut {
        session: 1,
        data: Some(vec![1u8; 100 * 1024]),
        out: Some(512),
    });
    let (bi, bs, br, bb) = (
        encode(&init).unwrap(),
        encode(&sign).unwrap(),
        encode(&resp).unwrap(),
        encode(&big).unwrap(),
    );
    c.bench_function("encode SignInit(PSS)", |b| {
        b.iter(|| encode(black_box(&init)).unwrap())
    });
    c.bench_function("decode SignInit(PSS)", |b| {
        b.iter(|| decode::<Request>(black_box(&bi)).unwrap())
    });
    c.bench_function("encode Sign(32 B)", |b| {
        b.iter(|| encode(black_box(&sign)).unwrap())
    });
    c.bench_function("decode Sign(32 B)", |b| {
        b.iter(|| decode::<Request>(black_box(&bs)).unwrap())
    });
    c.bench_function("encode Output(256 B)", |b| {
        b.iter(|| encode(black_box(&resp)).unwrap())
    });
    c.bench_function("decode Output(256 B)", |b| {
        b.iter(|| decode::<Response>(black_box(&br)).unwrap())
    });
    c.bench_function("decode Sign(100 KiB)", |b| {
        b.iter(|| decode::<Request>(black_box(&bb)).unwrap())
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
