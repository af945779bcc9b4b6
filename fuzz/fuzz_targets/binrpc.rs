//! The control socket's BINRPC decoder (`kamcmd`'s protocol): any bytes, framed as the socket
//! frames them. What decodes must encode again to a packet that decodes to the same values.

#![no_main]

use libfuzzer_sys::fuzz_target;
use uacreg::fuzzing::binrpc;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(len)) = binrpc::packet_len(data) else {
        return;
    };
    let Some(framed) = data.get(..len) else {
        return;
    };
    let Ok(packet) = binrpc::decode(framed) else {
        return;
    };
    // Doubles are fixed-point thousandths on the wire: compare after one round.
    let Ok(bytes) = binrpc::encode(&packet) else {
        return;
    };
    let again = binrpc::decode(&bytes).expect("our own encoding decodes");
    let Ok(bytes_again) = binrpc::encode(&again) else {
        return;
    };
    assert_eq!(bytes, bytes_again, "encoding is stable");
});
