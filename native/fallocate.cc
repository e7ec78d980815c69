// fallocate(fd, offset, length): reserves disk blocks for an upload before its bytes arrive, so a
// full disk is reported at creation (ENOSPC) instead of half-way through a multi-gigabyte upload.
// Runs on the libuv threadpool; resolves with 0 or rejects with an Error carrying `errno`/`code`.
#include <napi.h>
#include "durable-file.h"
#include <fcntl.h>
#include <errno.h>
#include <string.h>

namespace {

class FallocateWorker : public Napi::AsyncWorker {
 public:
  FallocateWorker(Napi::Env env, int fd, off_t offset, off_t length)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd), offset_(offset), length_(length) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    // The Linux syscall, not glibc's posix_fallocate: where the filesystem cannot reserve blocks,
    // glibc would emulate by writing every block, which for gigabytes is far worse than ftruncate.
    int rc;
    do {
      rc = ::fallocate(fd_, 0, offset_, length_);
    } while (rc != 0 && errno == EINTR);
    err_ = rc == 0 ? 0 : errno;
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_ == 0) {
      deferred_.Resolve(Napi::Number::New(env, 0));
      return;
    }
    Napi::Error error = Napi::Error::New(env, std::string("fallocate: ") + strerror(err_));
    error.Set("errno", Napi::Number::New(env, -err_));
    const char* code = err_ == ENOSPC ? "ENOSPC"
                       : err_ == EOPNOTSUPP ? "EOPNOTSUPP"
                       : err_ == ENOSYS ? "ENOSYS"
                       : err_ == EBADF ? "EBADF"
                       : err_ == EFBIG ? "EFBIG"
                       : err_ == EDQUOT ? "EDQUOT"
                       : err_ == EINVAL ? "EINVAL"
                       : "EIO";
    error.Set("code", Napi::String::New(env, code));
    deferred_.Reject(error.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  off_t offset_;
  off_t length_;
  int err_ = 0;
};

Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber()) {
    Napi::TypeError::New(env, "fallocate(fd, offset, length)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto* worker = new FallocateWorker(env, info[0].As<Napi::Number>().Int32Value(),
                                     static_cast<off_t>(info[1].As<Napi::Number>().Int64Value()),
                                     static_cast<off_t>(info[2].As<Napi::Number>().Int64Value()));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("fallocate", Napi::Function::New(env, Fallocate));
  tussi::InitDurableFile(env, exports);
  return exports;
}

NODE_API_MODULE(tussi_native, Init)
