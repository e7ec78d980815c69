#ifndef TUSSI_DURABLE_FILE_H_
#define TUSSI_DURABLE_FILE_H_

#include <napi.h>

namespace tussi {
// Adds writeFileAtomic, readSmallFile, syncDirectory, lockFile, createFile and openFile to the
// exports.
void InitDurableFile(Napi::Env env, Napi::Object exports);
}  // namespace tussi

#endif  // TUSSI_DURABLE_FILE_H_
