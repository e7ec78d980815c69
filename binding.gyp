{
  "targets": [
    {
      "target_name": "tussi_native",
      "sources": ["native/fallocate.cc", "native/durable-file.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-O2"]
    }
  ]
}
