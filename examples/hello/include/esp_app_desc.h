/*
 * Application description, laid out like ESP-IDF's esp_app_desc_t
 * (see "App Image Format" in the ESP-IDF documentation). The bootloader,
 * esptool image-info and OTA tooling read it from the start of the first
 * flash-mapped segment of the app image.
 */
#pragma once

#include <stdint.h>

#define ESP_APP_DESC_MAGIC_WORD 0xABCD5432u

typedef struct {
    uint32_t magic_word;              /* ESP_APP_DESC_MAGIC_WORD */
    uint32_t secure_version;          /* anti-rollback counter */
    uint32_t reserv1[2];
    char version[32];                 /* application version (NUL-terminated) */
    char project_name[32];
    char time[16];                    /* left empty: reproducible builds */
    char date[16];                    /* left empty: reproducible builds */
    char idf_ver[32];
    uint8_t app_elf_sha256[32];       /* filled in by esptool elf2image */
    uint16_t min_efuse_blk_rev_full;  /* major * 100 + minor */
    uint16_t max_efuse_blk_rev_full;  /* major * 100 + minor */
    uint8_t mmu_page_size;            /* log2 of the flash MMU page size */
    uint8_t reserv3[3];
    uint32_t reserv2[18];
} esp_app_desc_t;

_Static_assert(sizeof(esp_app_desc_t) == 256, "esp_app_desc_t must be 256 bytes");
_Static_assert(__builtin_offsetof(esp_app_desc_t, app_elf_sha256) == 0x90,
               "app_elf_sha256 must be at offset 0x90 (image offset 0xb0)");
