/* An empty stand-in for <curl/curl.h>. librdkafka 2.12's CMake build includes this header
 * whenever WITH_OAUTHBEARER_OIDC is defined, even as 0 (confluentinc/librdkafka#5135), although
 * nothing from it is used without curl. emostream builds librdkafka without curl; this lets the
 * arm64 cross build (which uses CMake) compile without libcurl's headers for the target. */
