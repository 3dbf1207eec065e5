/*
 * A tiny stand-in for ESP-IDF's second-stage bootloader: it is loaded into
 * internal RAM by the ROM loader, announces itself on UART0 and parks the CPU.
 * (It does not map flash or start the app; it exists so the build produces a
 * genuine, loadable bootloader image in ESP-IDF's layout.)
 */
#include <stdint.h>

#include "esp_bootloader_desc.h"
#include "hello_soc.h"

#ifndef IDF_VER
#error "IDF_VER must be defined by the build"
#endif

__attribute__((used, section(".dram0.bootdesc")))
const esp_bootloader_desc_t esp_bootloader_desc = {
    .magic_byte = ESP_BOOTLOADER_DESC_MAGIC_BYTE,
    .version = 1,
    .idf_ver = IDF_VER,
    .date_time = "",
};

void bootloader_main(void) __attribute__((noreturn));

__attribute__((naked, noreturn, section(".text.entry"))) void _start(void)
{
    __asm__ volatile(
        ".option push\n"
        ".option norelax\n"
        "la sp, _stack_top\n"
        ".option pop\n"
        "j bootloader_main\n");
}

void bootloader_main(void)
{
    hello_uart_puts("hello bootloader (" CONFIG_IDF_TARGET ")\r\n");
    for (;;) {
        __asm__ volatile("wfi");
    }
}
