//! The `rpc_fifo` entry point (`kamctl rpc`'s transport): any line a local writer puts into the
//! FIFO. A line that is accepted names a reply FIFO that is a bare file name in the reply
//! directory, never a path; and whatever JSON a method answers, the jsonrpcs-style printing of
//! it reads back as the same JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use uacreg::fuzzing::fifo;

fuzz_target!(|data: &[u8]| {
    if let Ok((request, reply_name)) = fifo::parse_line(data) {
        assert!(fifo::is_bare_name(&reply_name), "{reply_name:?}");
        assert!(!reply_name.contains('/') && !reply_name.starts_with('.'));
        let printed = fifo::kamailio_pretty(&request);
        let again: serde_json::Value =
            serde_json::from_str(&printed).expect("the printed answer is JSON");
        // Compared with serde_json's own compact text read back: reading a float is not
        // exact (serde_json without float_roundtrip), the same way for both.
        let compact: serde_json::Value =
            serde_json::from_str(&request.to_string()).expect("compact JSON reads back");
        assert_eq!(again, compact, "printing changes nothing");
    }
});
