// JNI glue between dev.edgeexit.EdgeExitNative (Kotlin) and the edgeexit C API (include/edgeexit.h).
// Failures of the C API become dev.edgeexit.EdgeExitException with ee_last_error()'s message; bad array sizes
// become IllegalArgumentException (checked again here: a JNI caller can bypass the Kotlin checks).
#include <jni.h>

#include <cstdint>
#include <string>
#include <vector>

#include "edgeexit.h"

static_assert(sizeof(jlong) == sizeof(int64_t) && sizeof(jint) == sizeof(int32_t), "JNI types are not 64/32-bit");

namespace {

void throw_java(JNIEnv* env, const char* cls, const std::string& message) {
  jclass c = env->FindClass(cls);
  if (c != nullptr) env->ThrowNew(c, message.c_str());  // else NoClassDefFoundError is already pending
}

void throw_edgeexit(JNIEnv* env) { throw_java(env, "dev/edgeexit/EdgeExitException", ee_last_error()); }

ee_runtime* runtime_of(JNIEnv* env, jlong handle) {
  if (handle == 0) throw_java(env, "java/lang/IllegalStateException", "EarlyExitClassifier is closed");
  return reinterpret_cast<ee_runtime*>(handle);
}

// The runtime's C, H, W; false, with an EdgeExitException pending, when the C API refuses.
bool input_shape(JNIEnv* env, ee_runtime* rt, int64_t chw[3]) {
  if (ee_input_shape(rt, chw) == EE_OK) return true;
  throw_edgeexit(env);
  return false;
}

}  // namespace

extern "C" {

JNIEXPORT jlong JNICALL Java_dev_edgeexit_EdgeExitNative_open(JNIEnv* env, jclass, jstring bundle_dir) {
  const char* dir = env->GetStringUTFChars(bundle_dir, nullptr);
  if (dir == nullptr) return 0;  // OutOfMemoryError pending
  ee_runtime* rt = ee_open(dir);
  env->ReleaseStringUTFChars(bundle_dir, dir);
  if (rt == nullptr) {
    throw_edgeexit(env);
    return 0;
  }
  return reinterpret_cast<jlong>(rt);
}

JNIEXPORT void JNICALL Java_dev_edgeexit_EdgeExitNative_run(JNIEnv* env, jclass, jlong handle, jfloatArray pixels,
                                                            jint n, jlongArray predictions, jintArray exits,
                                                            jfloatArray logits) {
  ee_runtime* rt = runtime_of(env, handle);
  if (rt == nullptr) return;
  int64_t chw[3];
  ee_input_shape(rt, chw);
  const int64_t sample = chw[0] * chw[1] * chw[2];
  if (n < 1 || env->GetArrayLength(pixels) != n * sample || env->GetArrayLength(predictions) < n ||
      env->GetArrayLength(exits) < n || env->GetArrayLength(logits) < n * ee_num_classes(rt)) {
    throw_java(env, "java/lang/IllegalArgumentException",
               "run: array sizes do not fit n = " + std::to_string(n) + " | expected: pixels n x " +
                   std::to_string(sample) + ", predictions and exits n, logits n x " +
                   std::to_string(ee_num_classes(rt)));
    return;
  }
  jfloat* x = env->GetFloatArrayElements(pixels, nullptr);
  jlong* pred = env->GetLongArrayElements(predictions, nullptr);
  jint* ex = env->GetIntArrayElements(exits, nullptr);
  jfloat* lg = env->GetFloatArrayElements(logits, nullptr);
  int status = EE_ERR_INTERNAL;
  if (x && pred && ex && lg) {
    status = ee_run(rt, x, n, reinterpret_cast<int64_t*>(pred), reinterpret_cast<int32_t*>(ex), lg);
  }
  const jint commit = status == EE_OK ? 0 : JNI_ABORT;  // copy results back only on success
  if (lg) env->ReleaseFloatArrayElements(logits, lg, commit);
  if (ex) env->ReleaseIntArrayElements(exits, ex, commit);
  if (pred) env->ReleaseLongArrayElements(predictions, pred, commit);
  if (x) env->ReleaseFloatArrayElements(pixels, x, JNI_ABORT);  // read only
  if (status != EE_OK && !env->ExceptionCheck()) throw_edgeexit(env);
}

JNIEXPORT jintArray JNICALL Java_dev_edgeexit_EdgeExitNative_inputShape(JNIEnv* env, jclass, jlong handle) {
  ee_runtime* rt = runtime_of(env, handle);
  if (rt == nullptr) return nullptr;
  int64_t chw[3];
  if (!input_shape(env, rt, chw)) return nullptr;
  jint shape[3] = {jint(chw[0]), jint(chw[1]), jint(chw[2])};
  jintArray out = env->NewIntArray(3);
  if (out != nullptr) env->SetIntArrayRegion(out, 0, 3, shape);
  return out;
}

JNIEXPORT jint JNICALL Java_dev_edgeexit_EdgeExitNative_numClasses(JNIEnv* env, jclass, jlong handle) {
  ee_runtime* rt = runtime_of(env, handle);
  return rt ? jint(ee_num_classes(rt)) : 0;
}

JNIEXPORT jint JNICALL Java_dev_edgeexit_EdgeExitNative_numExits(JNIEnv* env, jclass, jlong handle) {
  ee_runtime* rt = runtime_of(env, handle);
  return rt ? jint(ee_num_exits(rt)) : 0;
}

// The class names as UTF-8 bytes, one array each (Kotlin decodes them: JNI's NewStringUTF reads "modified" UTF-8,
// which differs from the manifest's for characters outside the BMP).
JNIEXPORT jobjectArray JNICALL Java_dev_edgeexit_EdgeExitNative_classNames(JNIEnv* env, jclass, jlong handle) {
  ee_runtime* rt = runtime_of(env, handle);
  if (rt == nullptr) return nullptr;
  jclass bytes = env->FindClass("[B");
  if (bytes == nullptr) return nullptr;
  const int64_t n = ee_num_classes(rt);
  jobjectArray out = env->NewObjectArray(jsize(n), bytes, nullptr);
  for (int64_t k = 0; out != nullptr && k < n; ++k) {
    const std::string name = ee_class_name(rt, k);
    jbyteArray b = env->NewByteArray(jsize(name.size()));
    if (b == nullptr) return nullptr;  // OutOfMemoryError pending
    env->SetByteArrayRegion(b, 0, jsize(name.size()), reinterpret_cast<const jbyte*>(name.data()));
    env->SetObjectArrayElement(out, jsize(k), b);
    env->DeleteLocalRef(b);
  }
  return out;
}

JNIEXPORT jstring JNICALL Java_dev_edgeexit_EdgeExitNative_inputResize(JNIEnv* env, jclass, jlong handle) {
  ee_runtime* rt = runtime_of(env, handle);
  return rt ? env->NewStringUTF(ee_input_resize(rt)) : nullptr;  // ASCII: "bilinear" | "bilinear_antialias"
}

// mean then std, C values each
JNIEXPORT jfloatArray JNICALL Java_dev_edgeexit_EdgeExitNative_inputNormalisation(JNIEnv* env, jclass,
                                                                                  jlong handle) {
  ee_runtime* rt = runtime_of(env, handle);
  if (rt == nullptr) return nullptr;
  int64_t chw[3];
  if (!input_shape(env, rt, chw)) return nullptr;
  std::vector<float> values(size_t(2 * chw[0]));
  if (ee_input_normalisation(rt, values.data(), values.data() + chw[0]) != EE_OK) {
    throw_edgeexit(env);
    return nullptr;
  }
  jfloatArray out = env->NewFloatArray(jsize(values.size()));
  if (out != nullptr) env->SetFloatArrayRegion(out, 0, jsize(values.size()), values.data());
  return out;
}

JNIEXPORT jdouble JNICALL Java_dev_edgeexit_EdgeExitNative_segmentMs(JNIEnv* env, jclass, jlong handle, jint k) {
  ee_runtime* rt = runtime_of(env, handle);
  return rt ? ee_segment_ms(rt, k) : -1.0;
}

// ee_verify's per-method results as dev.edgeexit.MethodCheck[]; a failing vector is a result (EE_ERR_VERIFY), any
// other failure an EdgeExitException.
JNIEXPORT jobjectArray JNICALL Java_dev_edgeexit_EdgeExitNative_verify(JNIEnv* env, jclass, jlong handle) {
  ee_runtime* rt = runtime_of(env, handle);
  if (rt == nullptr) return nullptr;
  const int status = ee_verify(rt, nullptr);
  if (status != EE_OK && status != EE_ERR_VERIFY) {
    throw_edgeexit(env);
    return nullptr;
  }
  jclass cls = env->FindClass("dev/edgeexit/MethodCheck");
  if (cls == nullptr) return nullptr;  // NoClassDefFoundError pending
  jmethodID init = env->GetMethodID(cls, "<init>", "(Ljava/lang/String;IZDDLjava/lang/String;)V");
  if (init == nullptr) return nullptr;  // NoSuchMethodError pending
  const int count = ee_verify_count(rt);
  jobjectArray out = env->NewObjectArray(count, cls, nullptr);
  for (int i = 0; out != nullptr && i < count; ++i) {
    ee_method_check m;
    ee_verify_result(rt, i, &m);
    jstring method = env->NewStringUTF(m.method);
    jstring detail = env->NewStringUTF(m.detail);
    if (method == nullptr || detail == nullptr) return nullptr;  // OutOfMemoryError pending
    jobject check = env->NewObject(cls, init, method, jint(m.cases), jboolean(m.passed != 0), m.max_abs_error,
                                   m.max_error, detail);
    if (check == nullptr) return nullptr;
    env->SetObjectArrayElement(out, i, check);
    env->DeleteLocalRef(check);
    env->DeleteLocalRef(detail);
    env->DeleteLocalRef(method);
  }
  return out;
}

JNIEXPORT jdouble JNICALL Java_dev_edgeexit_EdgeExitNative_verifyTolerance(JNIEnv* env, jclass, jlong handle) {
  ee_runtime* rt = runtime_of(env, handle);
  return rt ? ee_verify_tolerance(rt) : -1.0;
}

JNIEXPORT void JNICALL Java_dev_edgeexit_EdgeExitNative_close(JNIEnv*, jclass, jlong handle) {
  ee_close(reinterpret_cast<ee_runtime*>(handle));
}

}  // extern "C"
