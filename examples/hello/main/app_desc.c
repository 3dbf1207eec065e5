/* The application description placed first in flash (section .flash.appdesc). */
#include "esp_app_desc.h"

#ifndef CONFIG_APP_PROJECT_VER
#error "CONFIG_APP_PROJECT_VER must be defined by the build"
#endif
#ifndef PROJECT_NAME
#error "PROJECT_NAME must be defined by the build"
#endif
#ifndef IDF_VER
#error "IDF_VER must be defined by the build"
#endif

_Static_assert(sizeof(CONFIG_APP_PROJECT_VER) <= 32, "version must be at most 31 bytes");
_Static_assert(sizeof(PROJECT_NAME) <= 32, "project name must be at most 31 bytes");
_Static_assert(sizeof(IDF_VER) <= 32, "IDF_VER must be at most 31 bytes");

/* log2(64 KB): the flash MMU page size the linker scripts assume. */
#define HELLO_MMU_PAGE_SIZE_LOG2 16

__attribute__((used, section(".flash.appdesc")))
const esp_app_desc_t esp_app_desc = {
    .magic_word = ESP_APP_DESC_MAGIC_WORD,
    .secure_version = 0,
    .version = CONFIG_APP_PROJECT_VER,
    .project_name = PROJECT_NAME,
    .time = "",
    .date = "",
    .idf_ver = IDF_VER,
    .app_elf_sha256 = {0},
    .min_efuse_blk_rev_full = 0,
    .max_efuse_blk_rev_full = 199,
    .mmu_page_size = HELLO_MMU_PAGE_SIZE_LOG2,
};
