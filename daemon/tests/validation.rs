//! AWS's request validation, pinned case by case (issue #10): `interop/validation_table.json`
//! holds, for every parameter of every Kinesis Data Streams and Firehose operation, what AWS
//! answers to a missing member, a wrong JSON type, each violated length/pattern/range
//! constraint, several violations at once (in AWS's order) and a missing resource — status,
//! error type and exact message, each with the source of the wording (captured AWS answers,
//! kinesalite's recorded tests, the current service model). `validation_table.py` sends
//! every case, SigV4-signed, to the real daemon and fails on any difference.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

#[test]
fn every_operation_validates_as_aws_does() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    let out = run_interop(&d, s.api, "validation_table.py", &[]);
    assert!(out.contains("cases match AWS"), "{out}");
    d.stop_cleanly();
}

/// Every operation of both APIs through the real AWS CLI (its happy path, outputs checked),
/// and every error type each operation documents that can be provoked locally, through
/// boto3 (`interop/every_operation.py`; what cannot be reached here is listed there per
/// operation).
#[test]
fn every_operation_through_the_aws_cli_and_each_error_through_boto3() {
    let s = Setup::new("", &[]);
    let mut d = s.start();
    d.wait_ready();
    let out = run_interop(&d, s.api, "every_operation.py", &[]);
    assert!(out.contains("CLI calls"), "{out}");
    d.stop_cleanly();
}
