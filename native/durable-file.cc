// The small-file operations of every request (records, receipts, directory fsyncs), each as ONE
// job on the libuv threadpool instead of one job per syscall. An atomic record write through
// fs.promises is open, write, close and rename (with fsync on: fsync, then open, fsync and close
// of the directory): four to eight round trips between the event loop and a pool thread, each
// with its wake-ups, for a 200-byte file. Here the syscalls run back to back on one pool thread.
//
// Errors are rejected as Node's fs errors are: an Error with `errno` (negative), `code`
// (ENOENT, EEXIST, ENOSPC, ...), `syscall` and `path`, so callers handle both paths alike.
//
// Every existing file is opened as a file: O_NOFOLLOW (a symlink planted in its place is ELOOP,
// never followed), O_NONBLOCK (a FIFO planted in its place would otherwise block the open, and
// with it a threadpool thread, until a writer came), O_NOCTTY, then fstat'ed: anything but a
// regular file with one link is refused (EISDIR, EFTYPE, EMLINK) before a byte is read or written.
#include "durable-file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <string>

namespace tussi {
namespace {

// A failed syscall: which one, on which path, and errno. `err == 0` means success.
struct Failure {
  int err = 0;
  const char* syscall = "";
  std::string path;

  bool Set(const char* call, const std::string& where) {
    err = errno;
    syscall = call;
    path = where;
    return false;
  }
};

int OpenRetrying(const char* path, int flags, mode_t mode) {
  int fd;
  do {
    fd = ::open(path, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// close() is not retried on EINTR (Linux releases the descriptor anyway).
void CloseQuietly(int fd) {
  int saved = errno;
  ::close(fd);
  errno = saved;
}

// Writes all of `data` at `offset` (retrying short writes and EINTR); false with `failure` set
// when a write fails, or writes nothing (EIO: no endless loop).
bool WriteFully(int fd, const std::string& data, off_t offset, Failure* failure,
                const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done,
                         offset + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return failure->Set("write", path);
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

// A refusal with no errno of its own. UV_EFTYPE ("inappropriate file type or format") names a
// FIFO, socket or device where a regular file was expected, as libuv does on BSD.
bool Refuse(Failure* failure, int err, const std::string& path) {
  errno = err;
  return failure->Set("open", path);
}

// Opens an existing file as a regular file of its own (see the top of this file): the
// descriptor, or -1 with `failure` set. `access` is O_RDONLY or O_RDWR.
int OpenRegular(const std::string& path, int access, Failure* failure) {
  int fd = OpenRetrying(path.c_str(), access | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0);
  if (fd < 0) {
    failure->Set("open", path);
    return -1;
  }
  struct stat info;
  bool ok;
  if (::fstat(fd, &info) != 0) {
    ok = failure->Set("fstat", path);
  } else if (S_ISDIR(info.st_mode)) {
    ok = Refuse(failure, EISDIR, path);
  } else if (!S_ISREG(info.st_mode)) {
    ok = Refuse(failure, -UV_EFTYPE, path);
  } else if (info.st_nlink > 1) {
    // A hard link to a file elsewhere: writing it would change that file. (0 links is a file
    // removed or replaced by a rename since it was opened: still the one that was named.)
    ok = Refuse(failure, EMLINK, path);
  } else {
    // O_NONBLOCK was for the open only; regular I/O goes on as usual.
    int flags = ::fcntl(fd, F_GETFL);
    ok = (flags >= 0 && ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0) ||
         failure->Set("fcntl", path);
  }
  if (!ok) {
    CloseQuietly(fd);
    return -1;
  }
  return fd;
}

bool SyncDirectoryAt(const std::string& dir, Failure* failure) {
  int fd = OpenRetrying(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) return failure->Set("open", dir);
  if (::fsync(fd) != 0) {
    failure->Set("fsync", dir);
    CloseQuietly(fd);
    return false;
  }
  if (::close(fd) != 0 && errno != EINTR) return failure->Set("close", dir);
  return true;
}

Napi::Value ErrorFor(Napi::Env env, const Failure& failure) {
  const char* code = uv_err_name(-failure.err);
  // libuv's messages, as Node's fs errors have them (and EFTYPE has no strerror).
  std::string message = std::string(code) + ": " + uv_strerror(-failure.err) + ", " +
                        failure.syscall + " '" + failure.path + "'";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("errno", Napi::Number::New(env, -failure.err));
  error.Set("code", Napi::String::New(env, code));
  error.Set("syscall", Napi::String::New(env, failure.syscall));
  error.Set("path", Napi::String::New(env, failure.path));
  return error.Value();
}

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }
  void OnOK() override {
    Napi::Env env = Env();
    if (failure_.err == 0) {
      deferred_.Resolve(Result(env));
    } else {
      deferred_.Reject(ErrorFor(env, failure_));
    }
  }
  Napi::Promise::Deferred deferred_;
  Failure failure_;
};

// temp is created exclusively (O_EXCL, O_NOFOLLOW: whatever is planted under its name is
// refused, never opened) with `mode` beside target, written whole, optionally fsync'ed, renamed
// over target (a rename replaces a symlink there, it never follows it), and then the directory
// optionally fsync'ed. On any failure before the rename the temp file is removed.
class WriteAtomicWorker : public PromiseWorker {
 public:
  WriteAtomicWorker(Napi::Env env, std::string temp, std::string target, std::string dir,
                    std::string data, bool durable, mode_t mode)
      : PromiseWorker(env), temp_(std::move(temp)), target_(std::move(target)),
        dir_(std::move(dir)), data_(std::move(data)), durable_(durable), mode_(mode) {}

  void Execute() override {
    if (!WriteTemp()) {
      ::unlink(temp_.c_str());
      return;
    }
    if (::rename(temp_.c_str(), target_.c_str()) != 0) {
      failure_.Set("rename", temp_);
      ::unlink(temp_.c_str());
      return;
    }
    if (durable_) SyncDirectoryAt(dir_, &failure_);
  }

 private:
  bool WriteTemp() {
    int fd = OpenRetrying(temp_.c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, mode_);
    if (fd < 0) return failure_.Set("open", temp_);
    if (!WriteFully(fd, data_, 0, &failure_, temp_)) {
      CloseQuietly(fd);
      return false;
    }
    if (durable_ && ::fsync(fd) != 0) {
      failure_.Set("fsync", temp_);
      CloseQuietly(fd);
      return false;
    }
    // A close that fails (EIO on some filesystems) means the bytes may not be there.
    if (::close(fd) != 0 && errno != EINTR) return failure_.Set("close", temp_);
    return true;
  }

  std::string temp_;
  std::string target_;
  std::string dir_;
  std::string data_;
  bool durable_;
  mode_t mode_;
};

// The whole file as UTF-8 text (records are a few hundred bytes; no size limit is imposed). Only
// a regular file of its own is read (OpenRegular).
class ReadSmallWorker : public PromiseWorker {
 public:
  ReadSmallWorker(Napi::Env env, std::string path) : PromiseWorker(env), path_(std::move(path)) {}

  void Execute() override {
    int fd = OpenRegular(path_, O_RDONLY, &failure_);
    if (fd < 0) return;
    char buffer[16 * 1024];
    for (;;) {
      ssize_t n = ::pread(fd, buffer, sizeof buffer, static_cast<off_t>(content_.size()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        failure_.Set("read", path_);
        break;
      }
      content_.append(buffer, static_cast<size_t>(n));
      // A short read of a regular file is its end: no second call to learn it.
      if (static_cast<size_t>(n) < sizeof buffer) break;
    }
    CloseQuietly(fd);
  }

 protected:
  Napi::Value Result(Napi::Env env) override {
    return Napi::String::New(env, content_.data(), content_.size());
  }

 private:
  std::string path_;
  std::string content_;
};

// `data` written at `offset` of an existing regular file of its own (OpenRegular), then
// optionally fdatasync'ed, but only if the file is still what the caller last saw: `size`
// bytes long, with `check` at `check_at` (a record's newest slot header, as read under the
// upload's lock). Resolves false, writing nothing, when it is not: an update in place, with no
// file created or renamed, that never lands on a file that changed under it.
class UpdateInPlaceWorker : public PromiseWorker {
 public:
  UpdateInPlaceWorker(Napi::Env env, std::string path, off_t offset, std::string data,
                      bool durable, off_t size, off_t check_at, std::string check)
      : PromiseWorker(env), path_(std::move(path)), offset_(offset), data_(std::move(data)),
        durable_(durable), size_(size), check_at_(check_at), check_(std::move(check)) {}

  void Execute() override {
    int fd = OpenRegular(path_, O_RDWR, &failure_);
    if (fd < 0) return;
    int matches = Matches(fd);
    if (matches <= 0) {
      CloseQuietly(fd);
      return;
    }
    if (!WriteFully(fd, data_, offset_, &failure_, path_)) {
      CloseQuietly(fd);
      return;
    }
    if (durable_ && ::fdatasync(fd) != 0) {
      failure_.Set("fdatasync", path_);
      CloseQuietly(fd);
      return;
    }
    if (::close(fd) != 0 && errno != EINTR) {
      failure_.Set("close", path_);
      return;
    }
    written_ = true;
  }

 protected:
  Napi::Value Result(Napi::Env env) override { return Napi::Boolean::New(env, written_); }

 private:
  // 1: as expected; 0: changed; -1: failed (failure_ set).
  int Matches(int fd) {
    struct stat info;
    if (::fstat(fd, &info) != 0) {
      failure_.Set("fstat", path_);
      return -1;
    }
    if (info.st_size != size_) return 0;
    std::string seen(check_.size(), '\0');
    size_t got = 0;
    while (got < seen.size()) {
      ssize_t n = ::pread(fd, &seen[got], seen.size() - got, check_at_ + static_cast<off_t>(got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        failure_.Set("read", path_);
        return -1;
      }
      if (n == 0) return 0;
      got += static_cast<size_t>(n);
    }
    return seen == check_ ? 1 : 0;
  }

  std::string path_;
  off_t offset_;
  std::string data_;
  bool durable_;
  off_t size_;
  off_t check_at_;
  std::string check_;
  bool written_ = false;
};

class SyncDirectoryWorker : public PromiseWorker {
 public:
  SyncDirectoryWorker(Napi::Env env, std::string dir) : PromiseWorker(env), dir_(std::move(dir)) {}
  void Execute() override { SyncDirectoryAt(dir_, &failure_); }

 private:
  std::string dir_;
};

// An exclusive non-blocking flock on `path`, held through a read-write descriptor that is
// returned (>= 0). -1: another holder has it. -2: `path` no longer names the inode that was
// locked (renamed or unlinked between open and flock by the previous holder, or replaced by
// anything else: the name is lstat'ed, never followed). Rejects ENOENT when there is no such
// file, and what OpenRegular refuses (ELOOP, EISDIR, EFTYPE, EMLINK) before locking it.
class LockWorker : public PromiseWorker {
 public:
  LockWorker(Napi::Env env, std::string path) : PromiseWorker(env), path_(std::move(path)) {}

  void Execute() override {
    int fd = OpenRegular(path_, O_RDWR, &failure_);
    if (fd < 0) return;
    int rc;
    do {
      rc = ::flock(fd, LOCK_EX | LOCK_NB);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      if (errno == EWOULDBLOCK) {
        result_ = -1;
      } else {
        failure_.Set("flock", path_);
      }
      CloseQuietly(fd);
      return;
    }
    struct stat held, named;
    if (::fstat(fd, &held) != 0) {
      failure_.Set("fstat", path_);
      CloseQuietly(fd);
      return;
    }
    if (::lstat(path_.c_str(), &named) != 0) {
      if (errno != ENOENT) {
        failure_.Set("lstat", path_);
        CloseQuietly(fd);
        return;
      }
      result_ = -2;
    } else if (held.st_ino != named.st_ino || held.st_dev != named.st_dev) {
      result_ = -2;
    }
    if (result_ == -2) {
      CloseQuietly(fd);
      return;
    }
    result_ = fd;
  }

 protected:
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, result_); }

 private:
  std::string path_;
  int result_ = 0;
};

// Creates `path` exclusively (O_EXCL, O_NOFOLLOW) with `mode`, reserves `length` bytes
// (fallocate; where the filesystem cannot, EOPNOTSUPP or ENOSYS, a sparse ftruncate),
// optionally fsyncs the file and its directory.
// Resolves "fallocate", "ftruncate" or "none" (length 0). On failure the file is removed.
class CreateWorker : public PromiseWorker {
 public:
  CreateWorker(Napi::Env env, std::string path, std::string dir, off_t length, bool durable,
               mode_t mode)
      : PromiseWorker(env), path_(std::move(path)), dir_(std::move(dir)), length_(length),
        durable_(durable), mode_(mode) {}

  void Execute() override {
    int fd = OpenRetrying(path_.c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, mode_);
    if (fd < 0) {
      failure_.Set("open", path_);
      return;
    }
    bool ok = Reserve(fd);
    if (ok && durable_ && ::fsync(fd) != 0) ok = failure_.Set("fsync", path_);
    if (!ok) {
      CloseQuietly(fd);
      ::unlink(path_.c_str());
      return;
    }
    if (::close(fd) != 0 && errno != EINTR) {
      failure_.Set("close", path_);
      ::unlink(path_.c_str());
      return;
    }
    if (durable_) SyncDirectoryAt(dir_, &failure_);
  }

 protected:
  Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, how_); }

 private:
  bool Reserve(int fd) {
    if (length_ == 0) return true;
    int rc;
    do {
      rc = ::fallocate(fd, 0, 0, length_);
    } while (rc != 0 && errno == EINTR);
    if (rc == 0) {
      how_ = "fallocate";
      return true;
    }
    if (errno != EOPNOTSUPP && errno != ENOSYS) return failure_.Set("fallocate", path_);
    do {
      rc = ::ftruncate(fd, length_);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) return failure_.Set("ftruncate", path_);
    how_ = "ftruncate";
    return true;
  }

  std::string path_;
  std::string dir_;
  off_t length_;
  bool durable_;
  mode_t mode_;
  const char* how_ = "none";
};

// OpenRegular as one job: the descriptor of `path` opened as a regular file of its own,
// read-only or read-write, for the caller to use and close.
class OpenWorker : public PromiseWorker {
 public:
  OpenWorker(Napi::Env env, std::string path, bool writable)
      : PromiseWorker(env), path_(std::move(path)), writable_(writable) {}

  void Execute() override { fd_ = OpenRegular(path_, writable_ ? O_RDWR : O_RDONLY, &failure_); }

 protected:
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, fd_); }

 private:
  std::string path_;
  bool writable_;
  int fd_ = -1;
};

// Moves `from` to `to` through `temp` (beside `to`), publishing only the inode checked: `from`
// is opened as a regular file of its own (OpenRegular), renamed to `temp`, and `temp` lstat'ed;
// if that is not the inode opened (something was swapped in between), `temp` is removed and
// "replaced" resolved. Else the file gets `mode` (fchmod, when >= 0), is renamed to `to`, and
// `dir` (the directory of `to`) is fsync'ed when `durable`. Resolves "moved", or "exdev" when
// `from` and `to` are on different filesystems (nothing done: the caller copies).
class MoveWorker : public PromiseWorker {
 public:
  MoveWorker(Napi::Env env, std::string from, std::string temp, std::string to, std::string dir,
             int mode, bool durable)
      : PromiseWorker(env), from_(std::move(from)), temp_(std::move(temp)), to_(std::move(to)),
        dir_(std::move(dir)), mode_(mode), durable_(durable) {}

  void Execute() override {
    int fd = OpenRegular(from_, O_RDONLY, &failure_);
    if (fd < 0) return;
    Move(fd);
    CloseQuietly(fd);
    if (failure_.err == 0 && result_[0] == 'm' && durable_) SyncDirectoryAt(dir_, &failure_);
  }

 protected:
  Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, result_); }

 private:
  void Move(int fd) {
    struct stat source, moved;
    if (::fstat(fd, &source) != 0) {
      failure_.Set("fstat", from_);
      return;
    }
    if (::rename(from_.c_str(), temp_.c_str()) != 0) {
      if (errno == EXDEV) {
        result_ = "exdev";
      } else {
        failure_.Set("rename", from_);
      }
      return;
    }
    // The rename took whatever was under `from` at that moment.
    if (::lstat(temp_.c_str(), &moved) != 0) {
      failure_.Set("lstat", temp_);
      ::unlink(temp_.c_str());
      return;
    }
    if (moved.st_ino != source.st_ino || moved.st_dev != source.st_dev) {
      ::unlink(temp_.c_str());
      result_ = "replaced";
      return;
    }
    if (mode_ >= 0 && ::fchmod(fd, static_cast<mode_t>(mode_)) != 0) {
      failure_.Set("fchmod", from_);
      ::unlink(temp_.c_str());
      return;
    }
    if (::rename(temp_.c_str(), to_.c_str()) != 0) {
      failure_.Set("rename", temp_);
      ::unlink(temp_.c_str());
      return;
    }
    result_ = "moved";
  }

  std::string from_;
  std::string temp_;
  std::string to_;
  std::string dir_;
  int mode_;
  bool durable_;
  const char* result_ = "";
};

// A finished upload's data file arrives in the completed queue: `from` is opened as a regular
// file of its own (OpenRegular), renamed over `to` (a rename replaces what is there, never
// follows it), and `to` lstat'ed: if that is not the inode opened (something was swapped in
// between), "replaced" is resolved and the caller sets it aside. Else its timestamps are set to
// now through the descriptor (its age in the queue counts from its arrival), and with `durable`
// the directories of `to` and of `from` are fsync'ed. Resolves "moved".
class ArriveWorker : public PromiseWorker {
 public:
  ArriveWorker(Napi::Env env, std::string from, std::string to, std::string from_dir,
               std::string to_dir, bool durable)
      : PromiseWorker(env), from_(std::move(from)), to_(std::move(to)),
        from_dir_(std::move(from_dir)), to_dir_(std::move(to_dir)), durable_(durable) {}

  void Execute() override {
    int fd = OpenRegular(from_, O_RDONLY, &failure_);
    if (fd < 0) return;
    bool moved = Arrive(fd);
    CloseQuietly(fd);
    if (moved && durable_ && SyncDirectoryAt(to_dir_, &failure_)) {
      SyncDirectoryAt(from_dir_, &failure_);
    }
  }

 protected:
  Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, result_); }

 private:
  bool Arrive(int fd) {
    struct stat source, arrived;
    if (::fstat(fd, &source) != 0) return failure_.Set("fstat", from_);
    if (::rename(from_.c_str(), to_.c_str()) != 0) return failure_.Set("rename", from_);
    if (::lstat(to_.c_str(), &arrived) != 0) return failure_.Set("lstat", to_);
    if (arrived.st_ino != source.st_ino || arrived.st_dev != source.st_dev) {
      result_ = "replaced";
      return false;
    }
    if (::futimens(fd, nullptr) != 0) return failure_.Set("futimens", to_);
    result_ = "moved";
    return true;
  }

  std::string from_;
  std::string to_;
  std::string from_dir_;
  std::string to_dir_;
  bool durable_;
  const char* result_ = "";
};

bool Usage(const Napi::CallbackInfo& info, bool ok, const char* usage) {
  if (!ok) Napi::TypeError::New(info.Env(), usage).ThrowAsJavaScriptException();
  return ok;
}

template <typename Worker, typename... Args>
Napi::Value Start(Napi::Env env, Args&&... args) {
  auto* worker = new Worker(env, std::forward<Args>(args)...);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value WriteFileAtomic(const Napi::CallbackInfo& info) {
  if (!Usage(info,
             info.Length() == 6 && info[0].IsString() && info[1].IsString() &&
                 info[2].IsString() && info[3].IsString() && info[4].IsBoolean() &&
                 info[5].IsNumber(),
             "writeFileAtomic(temp, target, dir, data, durable, mode)")) {
    return info.Env().Undefined();
  }
  return Start<WriteAtomicWorker>(info.Env(), info[0].As<Napi::String>().Utf8Value(),
                                  info[1].As<Napi::String>().Utf8Value(),
                                  info[2].As<Napi::String>().Utf8Value(),
                                  info[3].As<Napi::String>().Utf8Value(),
                                  info[4].As<Napi::Boolean>().Value(),
                                  static_cast<mode_t>(info[5].As<Napi::Number>().Uint32Value()));
}

Napi::Value ReadSmallFile(const Napi::CallbackInfo& info) {
  if (!Usage(info, info.Length() == 1 && info[0].IsString(), "readSmallFile(path)")) {
    return info.Env().Undefined();
  }
  return Start<ReadSmallWorker>(info.Env(), info[0].As<Napi::String>().Utf8Value());
}

Napi::Value SyncDirectory(const Napi::CallbackInfo& info) {
  if (!Usage(info, info.Length() == 1 && info[0].IsString(), "syncDirectory(path)")) {
    return info.Env().Undefined();
  }
  return Start<SyncDirectoryWorker>(info.Env(), info[0].As<Napi::String>().Utf8Value());
}

Napi::Value UpdateInPlace(const Napi::CallbackInfo& info) {
  if (!Usage(info,
             info.Length() == 7 && info[0].IsString() && info[1].IsNumber() &&
                 info[2].IsString() && info[3].IsBoolean() && info[4].IsNumber() &&
                 info[5].IsNumber() && info[6].IsString(),
             "updateInPlace(path, offset, data, durable, size, checkAt, check)")) {
    return info.Env().Undefined();
  }
  return Start<UpdateInPlaceWorker>(
      info.Env(), info[0].As<Napi::String>().Utf8Value(),
      static_cast<off_t>(info[1].As<Napi::Number>().Int64Value()),
      info[2].As<Napi::String>().Utf8Value(), info[3].As<Napi::Boolean>().Value(),
      static_cast<off_t>(info[4].As<Napi::Number>().Int64Value()),
      static_cast<off_t>(info[5].As<Napi::Number>().Int64Value()),
      info[6].As<Napi::String>().Utf8Value());
}

Napi::Value LockFile(const Napi::CallbackInfo& info) {
  if (!Usage(info, info.Length() == 1 && info[0].IsString(), "lockFile(path)")) {
    return info.Env().Undefined();
  }
  return Start<LockWorker>(info.Env(), info[0].As<Napi::String>().Utf8Value());
}

Napi::Value CreateFile(const Napi::CallbackInfo& info) {
  if (!Usage(info,
             info.Length() == 5 && info[0].IsString() && info[1].IsString() &&
                 info[2].IsNumber() && info[3].IsBoolean() && info[4].IsNumber(),
             "createFile(path, dir, length, durable, mode)")) {
    return info.Env().Undefined();
  }
  return Start<CreateWorker>(info.Env(), info[0].As<Napi::String>().Utf8Value(),
                             info[1].As<Napi::String>().Utf8Value(),
                             static_cast<off_t>(info[2].As<Napi::Number>().Int64Value()),
                             info[3].As<Napi::Boolean>().Value(),
                             static_cast<mode_t>(info[4].As<Napi::Number>().Uint32Value()));
}

Napi::Value OpenFile(const Napi::CallbackInfo& info) {
  if (!Usage(info, info.Length() == 2 && info[0].IsString() && info[1].IsBoolean(),
             "openFile(path, writable)")) {
    return info.Env().Undefined();
  }
  return Start<OpenWorker>(info.Env(), info[0].As<Napi::String>().Utf8Value(),
                           info[1].As<Napi::Boolean>().Value());
}

Napi::Value MoveFile(const Napi::CallbackInfo& info) {
  if (!Usage(info,
             info.Length() == 6 && info[0].IsString() && info[1].IsString() &&
                 info[2].IsString() && info[3].IsString() && info[4].IsNumber() &&
                 info[5].IsBoolean(),
             "moveFile(from, temp, to, dir, mode, durable)")) {
    return info.Env().Undefined();
  }
  return Start<MoveWorker>(info.Env(), info[0].As<Napi::String>().Utf8Value(),
                           info[1].As<Napi::String>().Utf8Value(),
                           info[2].As<Napi::String>().Utf8Value(),
                           info[3].As<Napi::String>().Utf8Value(),
                           info[4].As<Napi::Number>().Int32Value(),
                           info[5].As<Napi::Boolean>().Value());
}

Napi::Value ArriveFile(const Napi::CallbackInfo& info) {
  if (!Usage(info,
             info.Length() == 5 && info[0].IsString() && info[1].IsString() &&
                 info[2].IsString() && info[3].IsString() && info[4].IsBoolean(),
             "arriveFile(from, to, fromDir, toDir, durable)")) {
    return info.Env().Undefined();
  }
  return Start<ArriveWorker>(info.Env(), info[0].As<Napi::String>().Utf8Value(),
                             info[1].As<Napi::String>().Utf8Value(),
                             info[2].As<Napi::String>().Utf8Value(),
                             info[3].As<Napi::String>().Utf8Value(),
                             info[4].As<Napi::Boolean>().Value());
}

}  // namespace

void InitDurableFile(Napi::Env env, Napi::Object exports) {
  exports.Set("writeFileAtomic", Napi::Function::New(env, WriteFileAtomic));
  exports.Set("readSmallFile", Napi::Function::New(env, ReadSmallFile));
  exports.Set("syncDirectory", Napi::Function::New(env, SyncDirectory));
  exports.Set("lockFile", Napi::Function::New(env, LockFile));
  exports.Set("createFile", Napi::Function::New(env, CreateFile));
  exports.Set("openFile", Napi::Function::New(env, OpenFile));
  exports.Set("moveFile", Napi::Function::New(env, MoveFile));
  exports.Set("arriveFile", Napi::Function::New(env, ArriveFile));
  exports.Set("updateInPlace", Napi::Function::New(env, UpdateInPlace));
}

}  // namespace tussi
