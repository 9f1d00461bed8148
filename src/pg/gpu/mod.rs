//! The SQL face of `engine::gpu`: which device this server would compute on.

mod device_status;
